"""The exception tree of tenantserve.

    TenantServeError
    ├── ConfigError              bad settings; raised at start-up
    ├── CheckpointError          a model checkpoint cannot be loaded or converted
    ├── InvalidRequestError      the client's input is wrong (maps to a 4xx)
    │   ├── PromptTooLongError   prompt + max_tokens exceed the context window
    │   └── AdapterError         unknown adapter, malformed files, rank too high, NaN weights
    └── EngineError              the engine failed while serving a request
        └── EngineDeadError      the engine process died; in-flight requests end with it

Engine code raises these; the gateway turns them into OpenAI-shaped errors.
"""


class TenantServeError(Exception):
    """Base of every error tenantserve raises on purpose."""


class ConfigError(TenantServeError):
    """A setting is missing or inconsistent."""


class CheckpointError(TenantServeError):
    """A model checkpoint directory cannot be loaded or converted."""


class InvalidRequestError(TenantServeError):
    """The request is malformed; the message names the problem."""


class PromptTooLongError(InvalidRequestError):
    """The prompt (plus requested output) does not fit the model's context."""


class AdapterError(InvalidRequestError):
    """A LoRA adapter is unknown, malformed, too large or contains non-finite weights."""


class EngineError(TenantServeError):
    """The engine failed while serving a request."""


class EngineDeadError(EngineError):
    """The engine process exited; it is being restarted."""
