"""The operations playbook: labels, allowed action verbs, default actions and severity.

This is business policy, not model output: the local backend and the embedding gate
use it to propose actions without an LLM call, and the checks use the allow-list.
"""

LABELS = ("data_quality", "partner_mismatch", "fraud_suspected", "routing_error", "other")
ACTION_VERBS = ("correct", "reprocess", "escalate", "notify", "request")
APPROVAL_LEVELS = ("analyst", "supervisor", "manager")
MAX_ACTIONS = 3

ACTIONS_BY_LABEL: dict[str, list[dict[str, str]]] = {
    "data_quality": [
        {"action": "correct", "reason": "fix the malformed fields at the source record", "approval_level": "analyst"},
        {"action": "reprocess", "reason": "re-run the affected batch after the fix", "approval_level": "analyst"},
    ],
    "partner_mismatch": [
        {"action": "request", "reason": "ask the partner for their settlement report", "approval_level": "analyst"},
        {"action": "correct", "reason": "adjust the ledger once amounts are confirmed", "approval_level": "supervisor"},
    ],
    "fraud_suspected": [
        {"action": "escalate", "reason": "hand over to the fraud investigations team", "approval_level": "supervisor"},
        {"action": "notify", "reason": "warn the customer through a verified channel", "approval_level": "analyst"},
    ],
    "routing_error": [
        {"action": "correct", "reason": "reassign the case to the right team", "approval_level": "analyst"},
        {"action": "notify", "reason": "tell the receiving team about the reassignment", "approval_level": "analyst"},
    ],
    "other": [
        {"action": "notify", "reason": "answer the customer and close the case", "approval_level": "analyst"},
    ],
}

BASE_SEVERITY: dict[str, int] = {"fraud_suspected": 5, "partner_mismatch": 3, "data_quality": 3,
                                 "routing_error": 2, "other": 1}


def severity_for(label: str, partner_risk_tier: str | None = None, is_exception: bool = False) -> int:
    """Severity 1..5: the label's base, one higher for a high-risk partner or an upstream exception."""
    bump = int(partner_risk_tier == "high" or bool(is_exception))
    return max(1, min(5, BASE_SEVERITY.get(label, 1) + bump))


def actions_for(label: str) -> list[dict[str, str]]:
    return [dict(a) for a in ACTIONS_BY_LABEL.get(label, ACTIONS_BY_LABEL["other"])][:MAX_ACTIONS]
