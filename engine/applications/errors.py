"""The one error the application workflow raises: a code, a message, and what it means."""

from __future__ import annotations

from typing import Literal

Meaning = Literal["bad_input", "not_found", "refused", "database"]

# How each meaning is answered: CLI exit status and HTTP status.
EXIT_STATUS: dict[Meaning, int] = {"bad_input": 2, "not_found": 2, "refused": 5, "database": 74}
HTTP_STATUS: dict[Meaning, int] = {
    "bad_input": 422,
    "not_found": 404,
    "refused": 409,
    "database": 503,
}


class ApplicationError(Exception):
    """A quote, review, bind, cancel or endorsement that cannot be done, said in one line.

    `code` is stable and machine-readable (`bind.expired`); `meaning` decides the exit
    and HTTP status.
    """

    def __init__(self, code: str, message: str, meaning: Meaning | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.meaning: Meaning = meaning or _meaning_of(code)

    @property
    def exit_code(self) -> int:
        return EXIT_STATUS[self.meaning]

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.meaning]

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def _meaning_of(code: str) -> Meaning:
    if code.startswith("db."):
        return "database"
    if code.endswith(".unknown"):
        return "not_found"
    if code.startswith("input."):
        return "bad_input"
    return "refused"
