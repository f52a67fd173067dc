"""``dbosify ui``: a local web view of a namespace's runs (``pip install 'dbosify[ui]'``).

A Starlette app served by Uvicorn, built on temporalio's own `Client` through the hook like the
CLI: a run list with Temporal's List Filter language and paging (`app.list_page`), a run page
(summary, input and result, pending activities, the history as a timeline, the stack trace,
buttons to signal, cancel and terminate), kept up to date by server-sent events fed by the
history long-poll (`app.events`, one per run however many streams follow it: `streams`).
Server-rendered HTML (`pages`) and one small script (`static/ui.js`): no front-end build step.
In front of it, `gate`: sessions for the token, POST-only actions, and the CSP and framing
headers on every response.
"""
