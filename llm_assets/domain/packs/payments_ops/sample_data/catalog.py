"""The business vocabulary of the sample data: labels, source systems, and the KB reference corpus.

Case texts (events, resolved KB cases, golden sets) are composed in `phrasings`.
"""

from __future__ import annotations

from pathlib import Path

from llm_assets.domain.pack import load_pack

# The taxonomy is the pack's (this generator invents cases for the payments pack, whatever pack runs).
PACK = load_pack(Path(__file__).resolve().parents[1])
LABELS = PACK.labels
ACTION_VERBS = PACK.action_verbs
ACTIONS_BY_LABEL = {label: PACK.actions_for(label) for label in LABELS}
BASE_SEVERITY = {label.name: label.severity for label in PACK.spec.labels}

SOURCE_SYSTEMS = ("payments-core", "partner-gateway", "fraud-engine", "ticketing", "ledger")

DEFAULT_ACTIONS = ACTIONS_BY_LABEL
SEVERITY = BASE_SEVERITY

POLICIES: tuple[tuple[str, str, str], ...] = (
    ("policy-fraud", "fraud_suspected",
     "Fraud handling policy. When a card is used in several countries within minutes, when the device "
     "fingerprint changes before payouts, when chargebacks spike on one card, or when a national id is "
     "linked to many new accounts, the case is suspected fraud. Escalate to fraud investigations with "
     "supervisor approval within one hour and notify the customer only through a verified channel. Never "
     "contact the customer on a phone number taken from the suspicious session."),
    ("policy-reconciliation", "partner_mismatch",
     "Partner reconciliation policy. A difference between a partner settlement report and the internal "
     "ledger, a fee charged differently from the signed contract, or a settlement to the wrong merchant "
     "account is a partner mismatch. Request the partner's settlement report, then correct the ledger "
     "with supervisor approval. Differences above 10,000 EUR are escalated to the partner manager."),
    ("policy-data-quality", "data_quality",
     "Data quality policy. Null or malformed amounts, invalid currency codes, shifted columns, duplicate "
     "transaction ids and missing exchange rates are data quality incidents. Correct the source record, "
     "then reprocess the affected batch. Analysts may approve both actions."),
    ("policy-routing", "routing_error",
     "Case routing policy. A case assigned to a queue that does not own its topic (KYC documents in "
     "chargebacks, transfers in card disputes, refunds in fraud without indicators) is a routing error. "
     "Correct the assignment to the owning team and notify that team. No customer contact is needed."),
    ("policy-general", "other",
     "General enquiries policy. Questions about invoices, opening hours, addresses, statement language "
     "and app feedback need no investigation. Notify the customer with the answer and close the case."),
    ("policy-pii", "other",
     "Personal data policy. Card numbers, IBANs, emails, phone numbers and national ids must never appear "
     "in case summaries, prompts or logs. Use the typed placeholders such as <CARD> and <EMAIL>."),
    ("policy-approvals", "other",
     "Approval levels. analyst: routine corrections, reprocessing, notifications and requests. supervisor: "
     "ledger corrections and fraud escalations. manager: account closures and losses above 50,000 EUR."),
)

RUNBOOKS: tuple[tuple[str, str, str], ...] = (
    ("runbook-card-velocity", "fraud_suspected",
     "Runbook: card velocity alert. Check the countries and timestamps of the card payments, compare the "
     "device fingerprint with the customer's known devices, block the card if three or more countries "
     "appear within ten minutes, and escalate to fraud investigations."),
    ("runbook-account-takeover", "fraud_suspected",
     "Runbook: account takeover. A password reset from a new device followed by payouts to a new IBAN is "
     "the typical pattern. Freeze payouts, escalate, and notify the customer through the registered app."),
    ("runbook-settlement-diff", "partner_mismatch",
     "Runbook: settlement difference with a partner. Pull the partner settlement report, match it line by "
     "line with the ledger by reference, list missing and extra transactions, and request corrections."),
    ("runbook-fee-dispute", "partner_mismatch",
     "Runbook: partner fee dispute. Compare the fee on the partner invoice with the signed contract fee "
     "schedule; request a credit note for overcharges and correct the accrual."),
    ("runbook-malformed-batch", "data_quality",
     "Runbook: malformed import batch. Identify rejected rows, fix malformed dates, negative fees and "
     "shifted columns at the source, then reprocess the batch and verify the totals reconcile."),
    ("runbook-missing-fx", "data_quality",
     "Runbook: missing exchange rates. Load the missing rates from the treasury feed, correct the affected "
     "payments and reprocess the end-of-day totals."),
    ("runbook-misrouted-case", "routing_error",
     "Runbook: misrouted case. Read the case topic, find the owning queue in the routing table (KYC to "
     "onboarding, transfers to payments operations, refunds to customer service, partner requests to "
     "partner management), reassign it and notify the receiving team."),
    ("runbook-general-enquiry", "other",
     "Runbook: general enquiry. Answer invoice copies, opening hours, address and language changes from "
     "the help centre templates and close the case."),
)

DATA_DICTIONARY: tuple[tuple[str, str], ...] = (
    ("settlement_amount", "Amount settled by the partner in the settlement currency; never null."),
    ("value_date", "Date on which the payment is valued, ISO 8601."),
    ("exchange_rate", "Rate from the treasury feed used to convert to EUR; required for non-EUR payments."),
    ("partner_id", "Identifier of the partner that sent the transaction, e.g. P-017."),
    ("entity_id", "Identifier of the customer account or merchant the event concerns."),
    ("partner_risk_tier", "Risk tier of the partner: low, medium, high, or unknown when no signal exists."),
    ("velocity_1h", "Number of payments by the same card or account in the last hour."),
    ("chargeback_ratio", "Share of the entity's payments disputed in the last 90 days."),
    ("exception_type", "Type of exception raised upstream: amount_mismatch, missing_field, velocity, misroute, or none."),
)

ESCALATION_TEMPLATES: tuple[tuple[str, str, str], ...] = (
    ("escalation-fraud", "fraud_suspected",
     "Escalation template to fraud investigations: case id, pattern observed (velocity, takeover, "
     "chargebacks, synthetic identity), amounts at risk, actions already taken, approval by a supervisor."),
    ("escalation-partner", "partner_mismatch",
     "Escalation template to partner management: partner id, references, difference in EUR, contract "
     "clause, requested correction and deadline."),
    ("escalation-data", "data_quality",
     "Escalation template to the data platform on-call: source system, batch id, rows affected, failing "
     "fields, and whether a reprocess is safe."),
)

GOLDEN_QUERIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("card used in several countries within minutes", ("policy-fraud", "runbook-card-velocity")),
    ("what to do about a password reset from a new device followed by payouts", ("runbook-account-takeover", "policy-fraud")),
    ("how to escalate suspected fraud to investigations", ("escalation-fraud", "policy-fraud")),
    ("partner settlement report differs from our ledger", ("policy-reconciliation", "runbook-settlement-diff")),
    ("partner invoice fee differs from the contract", ("runbook-fee-dispute", "policy-reconciliation")),
    ("escalate a partner difference to partner management", ("escalation-partner", "policy-reconciliation")),
    ("import batch with malformed dates and negative fees", ("runbook-malformed-batch", "policy-data-quality")),
    ("exchange rate missing for payments", ("runbook-missing-fx", "data-dictionary-exchange_rate")),
    ("null amount and invalid currency code", ("policy-data-quality", "runbook-malformed-batch")),
    ("case assigned to the wrong queue", ("policy-routing", "runbook-misrouted-case")),
    ("KYC document ended up in chargebacks", ("policy-routing", "runbook-misrouted-case")),
    ("customer asks for a copy of an invoice", ("policy-general", "runbook-general-enquiry")),
    ("can card numbers appear in summaries", ("policy-pii",)),
    ("who approves a ledger correction", ("policy-approvals", "policy-reconciliation")),
    ("what does partner_risk_tier mean", ("data-dictionary-partner_risk_tier",)),
    ("meaning of chargeback ratio field", ("data-dictionary-chargeback_ratio",)),
    ("notify the data platform on-call about a broken batch", ("escalation-data", "runbook-malformed-batch")),
    ("refund complaint routed to fraud without indicators", ("policy-routing", "runbook-misrouted-case")),
    ("block a card after a velocity alert", ("runbook-card-velocity",)),
    ("what is the value date", ("data-dictionary-value_date",)),
)
