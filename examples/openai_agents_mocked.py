"""An OpenAI Agents SDK agent run durably by Temporal's OpenAI Agents plugin, with a canned model.

No network and no API key: the model below answers every request with one fixed message. Each
model call still runs as a Temporal activity, as it would with a real model. Run it with
DBOSIFY_ACTIVATE=1 (no database configured: embedded SQLite under $DBOSIFY_HOME).
Needs `pip install temporalio-openai-agents`.
"""

import asyncio
import uuid
from datetime import timedelta

from agents import (
    Agent,
    Model,
    ModelProvider,
    ModelResponse,
    RunConfig,
    Runner,
    Usage,
)
from openai.types.responses import ResponseOutputMessage, ResponseOutputText
from temporalio import workflow
from temporalio.client import Client
from temporalio.openai_agents import ModelActivityParameters, OpenAIAgentsPlugin
from temporalio.worker import Worker

ANSWER = "Durable agents need no server: this answer came through dbosify."


class CannedModel(Model):
    """A model that always returns the same assistant message."""

    async def get_response(self, *args, **kwargs) -> ModelResponse:
        text = ResponseOutputText(type="output_text", text=ANSWER, annotations=[])
        message = ResponseOutputMessage(
            id="msg-1", type="message", role="assistant", status="completed", content=[text]
        )
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    def stream_response(self, *args, **kwargs):
        raise NotImplementedError("this example does not stream")


class CannedModelProvider(ModelProvider):
    def get_model(self, model_name: str | None) -> Model:
        return CannedModel()


@workflow.defn
class AssistantWorkflow:
    @workflow.run
    async def run(self, question: str) -> str:
        agent = Agent(name="Assistant", instructions="Answer in one sentence.")
        # The model call runs as an activity; tracing off: no trace export without a key.
        result = await Runner.run(agent, question, run_config=RunConfig(tracing_disabled=True))
        return result.final_output


async def main() -> None:
    plugin = OpenAIAgentsPlugin(
        model_params=ModelActivityParameters(start_to_close_timeout=timedelta(seconds=30)),
        model_provider=CannedModelProvider(),
    )
    client = await Client.connect("localhost:7233", plugins=[plugin])
    async with Worker(client, task_queue="agents", workflows=[AssistantWorkflow]):
        answer = await client.execute_workflow(
            AssistantWorkflow.run,
            "Where does this run?",
            id=f"assistant-{uuid.uuid4()}",
            task_queue="agents",
        )
    print(answer)


if __name__ == "__main__":
    asyncio.run(main())
