"""What callers ask the webhook service to do."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RegisterWebhook:
    user_id: str
    url: str
    events: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class DeleteWebhook:
    user_id: str
    webhook_id: str
