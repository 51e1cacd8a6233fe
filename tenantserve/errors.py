"""The exception tree of tenantserve.

    TenantServeError
    ├── ConfigError              bad settings; raised at start-up
    ├── CheckpointError          a model checkpoint cannot be loaded or converted
    ├── InvalidRequestError      the client's input is wrong (maps to a 4xx)
    │   ├── PromptTooLongError   prompt + max_tokens exceed the context window
    │   ├── AdapterError         unknown adapter, malformed files, rank too high, NaN weights
    │   └── NotFoundError        no such tenant, key, ... in the caller's scope (404)
    ├── AuthError                credentials refused (maps to 401 or 403)
    │   ├── AuthenticationError  401: missing, malformed, unknown or wrong key / JWT
    │   │   ├── CredentialsExpiredError  401: the key or JWT is past its expiry
    │   │   └── CredentialsRevokedError  401: the API key was revoked
    │   └── PermissionDeniedError        403: valid credentials, but not allowed
    │       └── TenantSuspendedError     403: the tenant is suspended
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


class NotFoundError(InvalidRequestError):
    """A tenant, key or other named resource does not exist (or is not the caller's)."""


class AuthError(TenantServeError):
    """Credentials were refused; the message is safe to show to the client."""


class AuthenticationError(AuthError):
    """No usable credentials: missing, malformed, unknown, or a wrong secret or signature."""


class CredentialsExpiredError(AuthenticationError):
    """The API key or JWT is past its expiry."""


class CredentialsRevokedError(AuthenticationError):
    """The API key was revoked."""


class PermissionDeniedError(AuthError):
    """The credentials are valid but do not allow this."""


class TenantSuspendedError(PermissionDeniedError):
    """The tenant the credentials belong to is suspended."""


class EngineError(TenantServeError):
    """The engine failed while serving a request."""


class EngineDeadError(EngineError):
    """The engine process exited; it is being restarted."""
