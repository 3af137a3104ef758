"""Ticket events as the service desk's producer writes them to `events.raw` (this pack's field names).

`events(now, n)` builds `n` well-formed tickets deterministically from hand-written templates,
opened within the two days before `now` (RFC 3339, some in UTC, some with a local offset), and then
appends the malformed messages in `MALFORMED` that the event contract must dead-letter. The same
`now` and `n` give the same list every time.

    from tests.packs.it_service_desk.events import events, MALFORMED_COUNT
    messages = events(datetime.now(timezone.utc))          # 120 tickets + MALFORMED_COUNT broken ones
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

FIELDS = ("ticket_id", "opened_at", "description", "requester", "service", "channel")
WINDOW = timedelta(days=2)
SITES = ("London", "Leeds", "Manchester", "Dublin", "Paris", "Madrid", "Hamburg", "Lisbon")
FLOORS = ("ground floor", "1st floor", "2nd floor", "3rd floor", "4th floor")
APPS = ("ERP", "Outlook", "Teams", "the HR portal", "Jira", "Excel", "the PDF editor")
# Requesters: most have a row in signals.csv, usr-0199 and usr-0200 do not (tier `unknown`).
REQUESTERS = tuple(f"usr-{i:04d}" for i in range(101, 113)) + ("usr-0199", "usr-0200")
NAMES = ("amira.haddad", "ben.oconnor", "chloe.martin", "dmitri.volkov", "eva.lindqvist", "felix.braun")
OFFSETS = (timezone.utc, timezone(timedelta(hours=1)), timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)))

# (label it should get, service, channel, priority, description template). Placeholders:
# {site} {floor} {app} {n} {asset} {email} {phone} {emp} {minutes}.
TEMPLATES = (
    ("access_request", "erp", "portal", "P4",
     "Please give me approver rights in ERP for cost centre {n}. My manager approved it."),
    ("access_request", "email", "email", "P4",
     "Can you add {email} to the shared mailbox facilities-{site}? Approved by the mailbox owner."),
    ("access_request", "software_center", "chat", "P4", "need a licence for {app} plugins, my team lead said ok"),
    ("access_request", "sso", "phone", "P3",
     "New starter {emp} in {site} has no accounts yet, starts tomorrow. Call me back on {phone}."),
    ("access_request", "hr_portal", "portal", "P4", "Remove HR portal manager rights from my old team, I moved on"),
    ("hardware_failure", "laptops", "walk_in", "P3", "Laptop {asset} will not power on, tried two chargers."),
    ("hardware_failure", "laptops", "portal", "P3", "screen on {asset} is cracked, half of it shows nothing"),
    ("hardware_failure", "laptops", "chat", "P3",
     "docking station on the {floor} in {site} stopped charging, monitors black"),
    ("hardware_failure", "printing", "email", "P4", "Printer on the {floor} shows error 79.00FE, nothing prints"),
    ("hardware_failure", "telephony", "phone", "P3",
     "My work phone fell and the screen is dead. Reach me at {phone}."),
    ("network_outage", "core_network", "pager", "P1",
     "ALERT access switch on the {floor} in {site} down, {n} access points offline"),
    ("network_outage", "core_network", "phone", "P1",
     "No internet on the whole {floor} in {site} for {minutes} minutes now"),
    ("network_outage", "vpn", "chat", "P2", "VPN down? {n} of us in {site} stuck on connecting, error 809"),
    ("network_outage", "core_network", "email", "P2",
     "DNS not resolving internal names in {site} since {minutes} minutes ago"),
    ("network_outage", "sso", "pager", "P1",
     "Synthetic check: the sign-in page times out from {site} for {minutes} minutes"),
    ("software_bug", "erp", "portal", "P3",
     "ERP crashes when I export the supplier report, started after the update"),
    ("software_bug", "email", "chat", "P3", "{app} freezes every time I open a calendar invite"),
    ("software_bug", "hr_portal", "email", "P3",
     "timesheet page gives a 500 error on submit, {n} people in my team see it"),
    ("software_bug", "software_center", "portal", "P3",
     "{app} stopped working after last night's update, closes at once"),
    ("software_bug", "erp", "phone", "P2",
     "Invoice approval fails with 'workflow state invalid' for everyone in {site}"),
    ("security_incident", "email", "email", "P1",
     "I clicked a link in a phishing mail and typed my password. I'm {email}, {emp}."),
    ("security_incident", "laptops", "phone", "P1", "I lost my laptop {asset} on the train in {site}. Call {phone}."),
    ("security_incident", "software_center", "pager", "P1", "EDR alert: ransomware behaviour on {asset}"),
    ("security_incident", "sso", "pager", "P1",
     "Suspicious login: account signed in from two countries {minutes} minutes apart"),
    ("security_incident", "telephony", "portal", "P2",
     "My phone was stolen, IMEI 490154203237518, it has the authenticator app"),
    ("how_to_question", "email", "chat", "P4", "how do I set up an out of office reply in Outlook and on my phone?"),
    ("how_to_question", "printing", "portal", "P4",
     "Where can I find the printer on the {floor} in {site} and how do I add it?"),
    ("how_to_question", "email", "email", "P4", "How can I share a large video with an agency outside the company?"),
    ("how_to_question", "sso", "chat", "P4", "what's the link for resetting my own password?"),
    ("how_to_question", "core_network", "walk_in", "P4", "Which wifi should visitors in {site} use?"),
)

# Messages the contract must reject (dead-letter), each with the reason a test can expect.
MALFORMED = (
    ("missing ticket_id", lambda base: {k: v for k, v in base.items() if k != "ticket_id"}),
    ("description is not a string", lambda base: {**base, "description": {"text": "printer broken"}}),
    ("description is a number", lambda base: {**base, "description": 404}),
    ("opened_at without a zone", lambda base: {**base, "opened_at": base["opened_at"][:19]}),
)
MALFORMED_COUNT = len(MALFORMED)


def _rfc3339(moment: datetime, zone: timezone) -> str:
    text = moment.astimezone(zone).isoformat(timespec="seconds")
    return text.replace("+00:00", "Z")


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        site=rng.choice(SITES), floor=rng.choice(FLOORS), app=rng.choice(APPS), n=rng.randint(2, 40),
        asset=f"LT-{rng.randint(10000, 49999)}", email=f"{rng.choice(NAMES)}@corp.example",
        phone=f"07700 900{rng.randint(100, 999)}", emp=f"EMP-{rng.randint(100000, 999999)}",
        minutes=rng.randint(5, 90))


def _template(i: int) -> tuple[str, str, str, str, str]:
    """The i-th ticket's template: every template in turn, in an order that mixes the labels."""
    return TEMPLATES[(i * 7) % len(TEMPLATES)]


def events(now: datetime, n: int = 120, *, seed: int = 7) -> list[dict]:
    """`n` tickets opened in the two days before `now` (oldest first), then the `MALFORMED` ones."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    rng = random.Random(seed)
    # Distinct whole seconds before `now`: at least one second old, less than two days.
    ages = sorted(rng.sample(range(1, int(WINDOW.total_seconds())), n), reverse=True)
    out = []
    for i, age in enumerate(ages):
        _, service, channel, priority, template = _template(i)
        opened = now.replace(microsecond=0) - timedelta(seconds=age)
        event = {
            "ticket_id": f"INC-{700000 + i:06d}",
            "opened_at": _rfc3339(opened, rng.choice(OFFSETS)),
            "description": _fill(template, rng),
            "requester": rng.choice(REQUESTERS),
            "service": service,
            "channel": channel,
            "priority": priority,
            "location": rng.choice(SITES),
        }
        if service in ("laptops", "telephony"):
            event["asset_tag"] = f"LT-{rng.randint(10000, 49999)}"
        out.append(event)
    base = {"ticket_id": "", "opened_at": _rfc3339(now.replace(microsecond=0) - timedelta(minutes=5), timezone.utc),
            "description": "Printer on the 2nd floor jams on every page", "requester": "usr-0101",
            "service": "printing", "channel": "portal", "priority": "P4", "location": "Leeds"}
    broken = [make({**base, "ticket_id": f"INC-BAD-{j}"}) for j, (_, make) in enumerate(MALFORMED)]
    return out + broken


def expected_labels(n: int = 120) -> dict[str, str]:
    """ticket_id -> the label its template was written for (the well-formed tickets of `events`)."""
    return {f"INC-{700000 + i:06d}": _template(i)[0] for i in range(n)}
