"""Strikes and bans: the memory of who misbehaved.

Every rejection of a client's update (invalid, statistical outlier, free-riding) is a strike; a
clean, accepted round forgives one. A client with ``strikes_to_ban`` strikes is banned, and a ban
is final: a banned client stays banned for the rest of the training, whatever it sends later.
Forgiveness keeps an honest client whose data is unusual in one round from being banned by a
slow accumulation of unlucky rounds, while a client that misbehaves every round still reaches
the threshold after exactly ``strikes_to_ban`` rounds.
"""

from __future__ import annotations

from typing import Any


class StrikeLedger:
    """Per-client strike counts, the banned set and the reason for each ban."""

    def __init__(self, strikes_to_ban: int = 3, forgive_on_clean_round: bool = True) -> None:
        if strikes_to_ban < 1:
            raise ValueError(f"strikes_to_ban must be >= 1, got {strikes_to_ban}")
        self.strikes_to_ban = strikes_to_ban
        self.forgive_on_clean_round = forgive_on_clean_round
        self._strikes: dict[str, int] = {}
        self._ban_reasons: dict[str, str] = {}

    @property
    def banned(self) -> frozenset[str]:
        return frozenset(self._ban_reasons)

    @property
    def strikes(self) -> dict[str, int]:
        return dict(self._strikes)

    def ban_reason(self, client: str) -> str | None:
        return self._ban_reasons.get(client)

    def strike(self, client: str, reason: str, round_number: int) -> bool:
        """Record a strike; return True when it bans the client."""
        if client in self._ban_reasons:
            return False
        count = self._strikes.get(client, 0) + 1
        self._strikes[client] = count
        if count >= self.strikes_to_ban:
            self._ban_reasons[client] = (
                f"{count} strikes, the last in round {round_number}: {reason}"
            )
            return True
        return False

    def ban(self, client: str, reason: str) -> None:
        """Ban outright (an operator's decision, or a revoked certificate)."""
        self._ban_reasons.setdefault(client, reason)

    def clean_round(self, client: str) -> None:
        if self.forgive_on_clean_round and self._strikes.get(client, 0) > 0:
            self._strikes[client] -= 1

    def state_dict(self) -> dict[str, Any]:
        return {"strikes": dict(self._strikes), "ban_reasons": dict(self._ban_reasons)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._strikes = {str(k): int(v) for k, v in state["strikes"].items()}
        self._ban_reasons = {str(k): str(v) for k, v in state["ban_reasons"].items()}
