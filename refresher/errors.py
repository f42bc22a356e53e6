"""The refresher's error hierarchy. Messages never carry token material."""


class RefresherError(Exception):
    """Base class of every error the refresher raises on purpose."""


class ConfigError(RefresherError):
    """Bad configuration: the message names the flag (or path) and the value."""


class TokenError(RefresherError):
    """A token (or token file) that cannot be used: unreadable, malformed, expired, mismatched."""


class FileWriteError(RefresherError):
    """Writing the token file or a trigger file failed (read-only, full, missing directory)."""


class ApiError(RefresherError):
    """A TokenRequest call failed."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class TransientApiError(ApiError):
    """Worth retrying soon: 5xx, 429, timeouts, resets, garbage bodies."""


class PermanentApiError(ApiError):
    """A configuration problem (401/403/404/422): retried only at a slow pace."""
