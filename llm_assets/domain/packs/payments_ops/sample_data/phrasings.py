"""Case texts composed from varied parts, and the split of those parts into train / validation / held_out.

A case text is composed from a phrasing *family* of its label (a sub-scenario with its own
vocabulary: card velocity, SIM swap, fee dispute...), an opener, a core clause and optional
details, a mixed signal (a clause that names another label's vocabulary without changing the
label), a closer; then synonyms, abbreviations, typos and casing vary it further.

Every part (family, opener, closer, mixed signal, synonym variant, ambiguous template) belongs
to exactly one split, fixed by the sha256 of its text, so:
- the KB's resolved cases and the gate's training draw only from `train`;
- the gate's calibration draws from `validation`;
- the held-out golden set draws from `held_out`: sub-scenarios, openers, closers and synonyms
  that neither training nor calibration ever saw. It is a different population of phrasings,
  not a reshuffle of the same ones.

Live events (`split=None`) draw from every split, like real traffic would.
Slots: business and PII `{slot}`s are filled by the generator after the noise is applied
(noise never touches a PII value); `[[concept]]` picks a synonym variant of the split.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Literal, Sequence

Split = Literal["train", "validation", "held_out"]
SPLITS: tuple[Split, ...] = ("train", "validation", "held_out")
# Share of each label's families (and of every other part list) by split, in hash order.
SPLIT_SHARES = (("train", 0.5), ("validation", 0.75), ("held_out", 1.0))


@dataclass(frozen=True)
class Family:
    """One sub-scenario of a label: core clauses and detail clauses in its own vocabulary."""

    id: str
    label: str
    cores: tuple[str, ...]
    details: tuple[str, ...]


def _f(label: str, name: str, cores: Sequence[str], details: Sequence[str]) -> Family:
    return Family(f"{label}/{name}", label, tuple(cores), tuple(details))


FAMILIES: tuple[Family, ...] = (
    # -- data_quality ---------------------------------------------------------------------------------
    _f("data_quality", "null-amounts", (
        "Settlement file row for reference {ref} has a null settlement_amount and currency code 'XXX'",
        "[[several]] rows of the {system} extract arrive with an empty amount field and an invalid currency code",
        "amount is null for [[transaction]] {ref} in the {system} feed, currency shows as 'XXX'",
    ), ("the [[customer]] {email} says the statement does not match", "totals for the day cannot be computed",
        "downstream reports show blanks for these rows")),
    _f("data_quality", "malformed-dates", (
        "Batch import from {system} rejected {n} rows: malformed date in value_date and negative fee amounts",
        "value_date comes through as '31/02' in {n} records of the nightly import from {system}",
        "the {system} loader choked on {n} records with unparseable dates and fees below zero",
    ), ("account holder contact {phone}", "the import job stopped half way", "the parser logs show format errors")),
    _f("data_quality", "duplicate-ids", (
        "Duplicate [[transaction]] ids in the nightly extract for merchant {merchant}",
        "the same [[transaction]] id appears {n} times in today's {system} export for merchant {merchant}",
        "extract for merchant {merchant} contains repeated primary keys, {n} ids are doubled",
    ), ("counts are inflated in the dashboard", "reported by {email}", "dedup step did not run")),
    _f("data_quality", "shifted-columns", (
        "amount column shifted by one column after field 14 in the {system} file",
        "fields after position 14 are offset by one in the extract, so fees land in the amount column",
        "the CSV from {system} has an extra delimiter and every column after field 14 is misaligned",
    ), ("{n} rows affected", "reported by {email}", "the header row looks fine")),
    _f("data_quality", "missing-fx", (
        "The exchange rate field is empty for {n} payments dated yesterday and totals do not reconcile",
        "no FX rate was loaded for {n} non-EUR [[transaction]]s, so conversion to EUR failed",
        "treasury rates missing for yesterday: {n} [[transaction]]s show 0.0000 as conversion rate",
    ), ("beneficiary IBAN {iban} appears with a truncated name", "month-end totals are off",
        "the treasury feed was late")),
    _f("data_quality", "encoding-garbage", (
        "merchant names in the {system} extract are garbled, accented characters turned into question marks",
        "the {system} file switched encoding and {n} descriptor fields now contain mojibake",
        "UTF-8 broke in the latest export: beneficiary names are unreadable for {n} rows",
    ), ("search by name no longer works", "contact {email}", "the previous file was fine")),
    _f("data_quality", "truncated-file", (
        "the end-of-day file from {system} was cut off after {n} lines, the trailer record is missing",
        "only part of the {system} batch arrived: record count in the header says more than we received",
        "control totals in the trailer do not match the body of the {system} file, it looks truncated",
    ), ("the transfer finished without an error", "file reference {ref}", "the job will be rerun tonight")),
    _f("data_quality", "wrong-precision", (
        "amounts in the {system} feed are off by a factor of 100, cents were loaded as whole units",
        "{n} [[transaction]]s show amounts with four decimals where the schema allows two",
        "rounding in the {system} export turns {amount} into a different value in our tables",
    ), ("statements for {n} clients are wrong", "reported by {phone}", "only since the last release")),
    _f("data_quality", "stale-reference-data", (
        "the merchant category codes table was not refreshed, {n} merchants map to a retired MCC",
        "reference data for country codes is outdated and {n} rows fail validation",
        "lookup table for branch codes is stale; new branches come through as unknown in {system}",
    ), ("reports group them under 'other'", "contact {email}", "the refresh job has been failing")),
    _f("data_quality", "schema-drift", (
        "a new optional field appeared in the {system} payload and the loader dropped {n} records",
        "the {system} team renamed a column without notice and the ingest now fills it with nulls",
        "field type for fee_amount changed from number to text in the {system} feed",
    ), ("no alert fired", "reported by {email}", "we noticed it in the reconciliation job")),

    _f("data_quality", "null-merchant-ids", (
        "{n} card [[transaction]]s in the {system} feed have no merchant id, so they cannot be attributed",
        "merchant_id is blank on [[several]] records of the clearing file from {system}",
        "records without a merchant identifier keep arriving from {system} since Tuesday",
    ), ("the merchant reports are incomplete", "contact {email}", "validation should have rejected them")),
    _f("data_quality", "timezone-shift", (
        "timestamps in the {system} export are in local time without an offset, {n} [[transaction]]s land on the wrong day",
        "booking dates are shifted by one day for late-evening [[transaction]]s because the feed dropped the UTC offset",
        "event times from {system} jumped by two hours after the daylight saving change",
    ), ("daily totals no longer match", "reported by {phone}", "only records after 22:00 are affected")),
    _f("data_quality", "bad-iban-format", (
        "beneficiary account numbers in the {system} file fail the checksum, {n} IBANs are invalid",
        "the IBAN field contains spaces and lower-case letters in the {system} extract and the validator rejects them",
        "{n} payment instructions carry an IBAN with the wrong length for its country",
    ), ("example: {iban}", "the payments are on hold", "the source system does not validate")),
    _f("data_quality", "negative-balances", (
        "account balances in the data warehouse are negative for {n} savings accounts that cannot go below zero",
        "the balance snapshot from {system} shows impossible values, e.g. -{amount} EUR on a prepaid card",
        "sum of the ledger entries does not equal the stored balance for {n} accounts",
    ), ("the snapshot job ran twice", "contact {email}", "finance noticed it in the report")),
    # -- partner_mismatch -----------------------------------------------------------------------------
    _f("partner_mismatch", "amount-diff", (
        "[[partner]] {partner} reports {amount} EUR for reference {ref} but our [[ledger]] shows {amount2} EUR",
        "for reference {ref}, {partner} has {amount} EUR while our [[ledger]] has {amount2} EUR",
        "the [[settlement report]] of {partner} and our [[ledger]] disagree on {ref}: {amount} vs {amount2} EUR",
    ), ("their ops contact is {phone}", "the [[discrepancy]] appeared after the last cycle",
        "settlement date was yesterday")),
    _f("partner_mismatch", "missing-transactions", (
        "Reconciliation with {partner} failed: they hold {n} [[transaction]]s we never received",
        "{partner} lists {n} [[transaction]]s in its [[settlement report]] that are not in our [[ledger]]",
        "[[several]] items settled by {partner} have no counterpart on our side",
    ), ("[[settlement report]] vs internal [[ledger]] differ by {amount} EUR", "contact {email}",
        "the cut-off times may differ")),
    _f("partner_mismatch", "wrong-account", (
        "[[partner]] {partner} settled against the wrong merchant account",
        "{partner} paid the funds of merchant {merchant} into another merchant's account",
        "the remittance from {partner} went to an account that is not the one in the contract",
    ), ("their remittance advice lists IBAN {iban} while the contract says another account",
        "merchant {merchant} is asking where the money is", "amount {amount} EUR")),
    _f("partner_mismatch", "fee-dispute", (
        "Fee schedule mismatch with {partner}: [[partner]] invoice charges {amount} EUR per item, the signed contract says {amount2} EUR",
        "{partner} billed a processing fee of {amount} EUR although the agreed rate is {amount2} EUR",
        "the invoice from {partner} applies last year's fee table instead of the contract rate",
    ), ("contact {email}", "the [[discrepancy]] adds up over the month", "the contract was renewed in March")),
    _f("partner_mismatch", "currency-mismatch", (
        "{partner} settled {ref} in USD while our [[ledger]] booked it in EUR, the amounts do not tie out",
        "the [[settlement report]] of {partner} uses a different FX rate than ours, a [[discrepancy]] of {amount} EUR",
        "conversion applied by {partner} differs from the contract rate for {n} items",
    ), ("their finance team is at {email}", "we need their rate source", "period closes on Friday")),
    _f("partner_mismatch", "payout-timing", (
        "{partner} says the payout for {ref} was sent on Monday but it is not booked in our [[ledger]]",
        "settlement from {partner} arrived two days late and the [[ledger]] shows an open balance of {amount} EUR",
        "{partner} confirms payment of {amount} EUR; our bank statement does not show it",
    ), ("their reference is {ref}", "contact {phone}", "treasury asked for confirmation")),
    _f("partner_mismatch", "refund-netting", (
        "{partner} netted {n} refunds against the settlement, so the amount received is {amount} EUR short",
        "refunds were deducted twice by {partner}: once in the [[settlement report]] and once in the transfer",
        "the settlement of {partner} excludes chargebacks our [[ledger]] still counts",
    ), ("their ops contact is {email}", "reference {ref}", "the contract says no netting")),
    _f("partner_mismatch", "volume-report", (
        "monthly volume report from {partner} shows {n} more [[transaction]]s than our count for the same period",
        "the [[transaction]] counts of {partner} and our [[ledger]] differ for the month, volume-based fees depend on it",
        "{partner} invoices tiered pricing on a volume we do not see in our records",
    ), ("contact {email}", "the [[discrepancy]] is about {amount} EUR in fees", "their report is attached")),
    _f("partner_mismatch", "interchange-rates", (
        "interchange passed through by {partner} is higher than the scheme rate in the contract",
        "{partner} charged a cross-border interchange on domestic cards, {amount} EUR over the agreed amount",
        "scheme fees on the {partner} statement do not match the pass-through terms we signed",
    ), ("merchant {merchant} is affected", "their account manager is {phone}", "since the new pricing")),
    _f("partner_mismatch", "reserve-held", (
        "{partner} is holding a rolling reserve of {amount} EUR that our contract does not provide for",
        "the settlement from {partner} is reduced by a reserve the [[ledger]] knows nothing about",
        "{partner} withheld {amount} EUR as collateral without notice",
    ), ("contact {email}", "reference {ref}", "merchant {merchant} complains")),

    _f("partner_mismatch", "commission-split", (
        "commission paid to {partner} is calculated on gross volume although the agreement says net of refunds",
        "{partner} claims a revenue share of {amount} EUR, our calculation gives {amount2} EUR",
        "the referral commission in the statement of {partner} does not match the agreed percentage",
    ), ("contact {email}", "the [[discrepancy]] goes back three months", "their calculation sheet is attached")),
    _f("partner_mismatch", "duplicate-settlement", (
        "{partner} settled batch {ref} twice, we received {amount} EUR more than expected",
        "the same settlement file from {partner} was paid out on two days",
        "{partner} sent a second payout for an already settled period",
    ), ("their ops contact is {phone}", "we need to agree on a return", "treasury holds the excess")),
    _f("partner_mismatch", "cutoff-mismatch", (
        "{partner} closes its settlement day at 18:00 CET while our [[ledger]] closes at midnight, {n} items fall in different days",
        "period boundaries of {partner} and ours differ, so {n} [[transaction]]s appear in different settlement periods",
        "items booked after the cut-off of {partner} show up a day later in their report than in our books",
    ), ("the month-end difference is {amount} EUR", "contact {email}", "this repeats every month")),
    _f("partner_mismatch", "missing-credit-note", (
        "{partner} promised a credit note of {amount} EUR for last quarter's outage and it never arrived",
        "the agreed rebate from {partner} is missing from this month's settlement",
        "{partner} has not applied the service-level credit the contract grants us",
    ), ("their account manager is {phone}", "reference {ref}", "finance wants it before closing")),
    # -- fraud_suspected ------------------------------------------------------------------------------
    _f("fraud_suspected", "card-velocity", (
        "Card {card} used in {n} countries within 10 minutes; device fingerprint changed and the velocity rule fired",
        "card {card} was charged from {n} different countries in a few minutes",
        "velocity alert: {n} authorisations on card {card} from far-apart locations within minutes",
    ), ("[[customer]] {email}", "the [[customer]] says they are at home", "amounts are small and increasing")),
    _f("fraud_suspected", "account-takeover", (
        "Account takeover suspected: password reset from a new device, then {n} payouts to IBAN {iban} within an hour",
        "someone changed the login email and phone of the account, then moved {amount} EUR to a new beneficiary",
        "after a password reset from an unknown device, payouts were redirected to IBAN {iban}",
    ), ("[[customer]] phone {phone} unreachable", "the [[customer]] denies making the changes",
        "login came from a new country")),
    _f("fraud_suspected", "chargeback-spike", (
        "Chargeback spike on card {card}: {n} disputes in a day, all card-not-present",
        "{n} disputes filed in one day for card-not-present purchases at merchant {merchant}",
        "dispute rate at merchant {merchant} jumped: {n} chargebacks for goods never received",
    ), ("shipping address changed just before the purchases", "card {card}", "all orders shipped abroad")),
    _f("fraud_suspected", "synthetic-identity", (
        "Synthetic identity suspected: national id {national_id} linked to {n} new accounts opened this week",
        "{n} accounts opened with national id {national_id} and different names",
        "the same national id {national_id} shows up on [[several]] applications with different birth dates",
    ), ("same device and different names", "documents look edited", "all from the same IP range")),
    _f("fraud_suspected", "sim-swap", (
        "the [[customer]]'s number {phone} was ported to a new SIM an hour before {n} transfers went out",
        "SIM swap suspected: one-time passcodes were delivered to a new SIM and {amount} EUR left the account",
        "carrier confirms a port-out of {phone}; right after, new payees were added",
    ), ("the [[customer]] lost mobile signal", "transfers went to IBAN {iban}", "the [[customer]] did not request it")),
    _f("fraud_suspected", "mule-account", (
        "account receives many small incoming transfers from unrelated people and forwards them within minutes",
        "money mule pattern: {n} inbound payments from strangers, immediately moved on to IBAN {iban}",
        "a newly opened account passes through {amount} EUR a day with no salary or shopping activity",
    ), ("holder contact {email}", "the account is {n} days old", "the pattern repeats daily")),
    _f("fraud_suspected", "phishing", (
        "the [[customer]] entered card details on a fake bank page and then saw {n} unknown charges on card {card}",
        "[[customer]] {email} received a text impersonating us, clicked the link, and a payment of {amount} EUR followed",
        "social engineering call: the caller posed as our staff and got the one-time code from the [[customer]]",
    ), ("the [[customer]] is very upset", "phone {phone}", "several similar reports today")),
    _f("fraud_suspected", "card-testing", (
        "{n} tiny authorisations of 1 EUR on random card numbers at merchant {merchant} within a minute",
        "card testing attack: bots try card numbers like {card} with small amounts on our checkout",
        "bursts of declined micro-payments from one IP, a pattern of enumeration of card numbers",
    ), ("the merchant {merchant} did not notice", "mostly declines, a few approvals", "it started at 3 am")),
    _f("fraud_suspected", "refund-abuse", (
        "the same [[customer]] claimed {n} refunds for items marked delivered, all on card {card}",
        "a ring of accounts keeps requesting refunds for goods signed for at delivery",
        "item-not-received claims from {email} on {n} orders with a confirmed delivery signature",
    ), ("the accounts share one address", "total refunded {amount} EUR", "the pattern matches a known scheme")),
    _f("fraud_suspected", "insider-access", (
        "an employee account looked up {n} high-balance [[customer]]s it has no case for, then beneficiaries changed",
        "staff user viewed the card {card} record outside business hours and a payout followed",
        "access logs show a back-office user exporting [[customer]] lists before payouts to IBAN {iban}",
    ), ("security was not told yet", "national id {national_id} was among the records viewed",
        "the user is on notice")),

    _f("fraud_suspected", "new-payee-large-transfer", (
        "a first-time payee received {amount} EUR minutes after being added from an unrecognised browser",
        "large transfer to a brand-new beneficiary at IBAN {iban}, right after a login from abroad",
        "the [[customer]] never paid this beneficiary before and the amount is ten times their usual",
    ), ("the [[customer]] cannot be reached on {phone}", "the session came through a proxy", "the bank of the payee is flagged")),
    _f("fraud_suspected", "stolen-card", (
        "[[customer]] reported the card {card} stolen, but {n} contactless payments went through after the report",
        "lost card {card} was used at {n} shops in the hour after it was reported missing",
        "payments with a card reported stolen this morning keep being approved",
    ), ("the block did not apply", "[[customer]] {email}", "the shops are in the same street")),
    _f("fraud_suspected", "invoice-redirection", (
        "a supplier email from a look-alike domain asked to change their bank details to IBAN {iban}",
        "business [[customer]] paid {amount} EUR to new bank details received in a spoofed email",
        "vendor payment redirected after a request from an address that differs by one letter from the real one",
    ), ("the real supplier never sent it", "contact {email}", "classic business email compromise")),
    _f("fraud_suspected", "money-laundering-structuring", (
        "cash deposits of just under the reporting limit, {n} times in a week, on the same account",
        "structuring pattern: deposits split into amounts below the threshold across several branches",
        "the account receives round amounts from {n} unrelated accounts and withdraws cash the same day",
    ), ("national id {national_id} on file", "source of funds unclear", "the pattern started last month")),
    # -- routing_error -------------------------------------------------------------------------------
    _f("routing_error", "kyc-in-chargebacks", (
        "Ticket was placed in the chargebacks [[queue]] but concerns a KYC document upload from {email}",
        "a KYC document upload from {email} ended up with the chargebacks team",
        "identity document review request sits in the chargebacks [[queue]]",
    ), ("it belongs to onboarding", "onboarding owns KYC", "nobody there can open the documents")),
    _f("routing_error", "transfer-to-disputes", (
        "Case about a failed SEPA transfer to {iban} was assigned to the card disputes team by the routing rule",
        "the routing rule sent a failed SEPA transfer case to card disputes",
        "card disputes got a ticket about a bounced SEPA transfer to {iban}",
    ), ("wrong team, it should go to payments operations", "payments ops handles SEPA returns",
        "disputes cannot act on transfers")),
    _f("routing_error", "refund-to-fraud", (
        "Complaint from {phone} about a delayed refund was routed to the fraud [[queue]] because of keyword matching",
        "a late refund complaint landed in fraud only because the text said 'unauthorised'",
        "keyword routing put an ordinary refund question from {phone} in the fraud [[queue]]",
    ), ("no fraud indicators present, needs [[customer]] service", "the refund is just late",
        "fraud team bounced it back")),
    _f("routing_error", "partner-to-collections", (
        "The partner onboarding request for {partner} landed in the collections [[queue]] after the form category was mislabelled",
        "collections received the onboarding form of {partner}",
        "a new partner application from {partner} was filed under collections by mistake",
    ), ("reassign to partner management", "partner management owns onboarding", "the category field was wrong")),
    _f("routing_error", "language-desk", (
        "a ticket written in German was sent to the French desk by the language detector",
        "the Spanish-speaking [[customer]] {email} was assigned to the Dutch support [[queue]]",
        "language routing misfired: a Portuguese request sits with the Italian team",
    ), ("nobody there reads the language", "the [[customer]] is waiting", "please move it to the right desk")),
    _f("routing_error", "region-mixup", (
        "a case for a UK merchant {merchant} was routed to the APAC operations [[queue]]",
        "the region field defaulted to US, so the ticket of an EU [[customer]] went to the wrong office",
        "ticket for merchant {merchant} in Spain went to the LATAM desk because of the country mapping",
    ), ("it needs the EMEA team", "time zones mean nobody picks it up", "the mapping table has a bug")),
    _f("routing_error", "priority-downgrade", (
        "a business-account ticket was put in the retail backlog [[queue]] and missed its SLA",
        "the premium [[customer]] {email} was routed to the standard [[queue]] instead of the priority desk",
        "enterprise support request from {phone} sits in the self-service [[queue]]",
    ), ("the SLA clock is running", "it belongs to the corporate desk", "the segment flag was ignored")),
    _f("routing_error", "loop-between-teams", (
        "this ticket bounced between card operations and payments {n} times, neither team owns it",
        "case ping-pongs between two [[queue]]s because the routing rules contradict each other",
        "{n} reassignments in two days for one ticket from {email}",
    ), ("it should go to account servicing", "the [[customer]] got {n} automatic emails", "please fix the rule")),
    _f("routing_error", "closed-team", (
        "tickets are still being assigned to the legacy merchant services [[queue]] that was closed last month",
        "the routing table points address changes to a team that no longer exists",
        "{n} cases went to a disbanded [[queue]] and nobody is watching it",
    ), ("they should go to account servicing now", "an example is from {email}", "the table was not updated")),
    _f("routing_error", "wrong-product", (
        "a mortgage question from {email} was filed under credit cards",
        "the product dropdown defaulted to cards, so a savings account request went to the card team",
        "loan servicing received a ticket about a debit card replacement from {phone}",
    ), ("the card team cannot help", "it belongs to the lending desk", "the form default is wrong")),

    _f("routing_error", "vip-to-bot", (
        "a formal complaint from {email} was answered by the chatbot [[queue]] instead of the complaints team",
        "the legal notice from a lawyer was sorted into the general FAQ [[queue]]",
        "a regulator enquiry landed in the automated replies [[queue]]",
    ), ("it needs the complaints team", "the deadline is in 5 days", "nobody has read it yet")),
    _f("routing_error", "duplicate-assignment", (
        "the same case was created in both the cards and the payments [[queue]] and two agents work on it",
        "{n} tickets were cloned into a second team's [[queue]] by the intake rule",
        "the routing rule assigns every chargeback twice, once to disputes and once to collections",
    ), ("the [[customer]] got two different answers", "contact {phone}", "only one team should own it")),
    _f("routing_error", "merchant-to-consumer", (
        "a merchant acquiring question from {merchant} was filed in the consumer banking [[queue]]",
        "business account request from merchant {merchant} sits with retail support",
        "the merchant services form sends its tickets to the private customers desk",
    ), ("it should go to merchant services", "the merchant is waiting", "the form mapping is wrong")),
    _f("routing_error", "after-hours-overflow", (
        "weekend overflow rule moved {n} urgent tickets to a team that only works weekdays",
        "night-time tickets are sent to the daytime [[queue]] and wait until morning",
        "the overflow routing sends cases to a [[queue]] no one staffs on holidays",
    ), ("they should go to the on-call desk", "one example is from {email}", "the rule ignores business hours")),
    # -- other ----------------------------------------------------------------------------------------
    _f("other", "invoice-copy", (
        "[[customer]] {email} asked for a copy of last month's invoice",
        "request for a duplicate of the March invoice from {email}",
        "could we resend the invoice for order {ref}, the [[customer]] lost it",
    ), ("no discrepancy found", "nothing else needed", "send it to the address on file")),
    _f("other", "opening-hours", (
        "General question from {phone} about opening hours of the support desk",
        "[[customer]] wants to know when the branch is open on public holidays",
        "is the phone line staffed on Saturdays, asks {phone}",
    ), ("and how to update a postal address", "a simple question", "no account issue")),
    _f("other", "statement-language", (
        "[[customer]] wants to change the language of their statements to French",
        "please switch the correspondence language to German for the account of {email}",
        "request to receive letters in Spanish instead of English",
    ), ("request logged by {email}", "no urgency", "standard change")),
    _f("other", "app-feedback", (
        "Feedback received: the new mobile app layout is confusing",
        "[[customer]] {phone} likes the new app but misses the old balance widget",
        "suggestion from a user: add a dark mode and bigger fonts to the app",
    ), ("[[customer]] {phone} suggests a dark mode", "just feedback, no action required", "forward to the product team")),
    _f("other", "address-change", (
        "[[customer]] moved and asks how to update the postal address on the account",
        "{email} wants to change the delivery address for new cards",
        "how does a [[customer]] update their registered address online, asks {phone}",
    ), ("general enquiry", "no documents needed yet", "routine request")),
    _f("other", "fee-question", (
        "[[customer]] asks what the monthly account fee covers",
        "question from {email} about whether foreign card payments cost extra",
        "general question about the price list for international transfers",
    ), ("no complaint, just a question", "point them to the price list", "nothing wrong on the account")),
    _f("other", "thank-you", (
        "[[customer]] {email} wrote to thank the team for the quick help last week",
        "compliment for the support agent who solved the card replacement",
        "positive feedback on the branch staff from {phone}",
    ), ("no action needed", "share with the team", "nothing to investigate")),
    _f("other", "document-request", (
        "[[customer]] needs a bank confirmation letter for a visa application",
        "{email} asks for an account balance certificate for the tax office",
        "request for a reference letter stating the account has been open for {n} years",
    ), ("standard template applies", "no discrepancy involved", "send by post")),
    _f("other", "marketing-optout", (
        "[[customer]] {email} wants to stop receiving newsletters",
        "please remove {phone} from the marketing call list",
        "unsubscribe request for promotional emails and offers",
    ), ("privacy preference update only", "no account issue", "confirm when done")),
    _f("other", "password-help", (
        "[[customer]] forgot how to change the password in the app and asks for the steps",
        "{email} wants to know how to reset the online banking PIN",
        "question about where to find the security settings in the new app",
    ), ("no suspicious activity", "a how-to question", "send the help article")),
    _f("other", "branch-appointment", (
        "[[customer]] wants to book an appointment with an adviser at the city branch",
        "{phone} asks whether an appointment is needed to open a savings account",
        "request to reschedule next week's meeting with the branch adviser",
    ), ("no issue on the account", "any slot in the afternoon works", "general request")),
    _f("other", "product-information", (
        "[[customer]] asks about the interest rate of the fixed-term deposit",
        "{email} wants information on the student account and its benefits",
        "question whether the premium card includes travel insurance",
    ), ("information request only", "send the brochure", "no complaint")),
    _f("other", "account-closure-info", (
        "[[customer]] asks what documents are needed to close a joint account next month",
        "{phone} wants to know how long it takes to transfer an account to another bank",
        "general question about the notice period for closing a savings account",
    ), ("nothing to investigate", "answer with the standard template", "no dispute involved")),
    _f("other", "card-delivery-time", (
        "[[customer]] asks how long a new debit card takes to arrive",
        "{email} wants to know if the replacement card can be sent abroad",
        "question about the delivery time of the card ordered on Monday",
    ), ("general information request", "nothing lost or stolen", "order reference {ref}")),
)

# Label-neutral openers and closers: how a ticket starts and ends says nothing about its label.
OPENERS = (
    "Hi team,", "FYI:", "Escalated from L1:", "Per the ops call,", "Quick one:", "Hello,", "Heads up -",
    "Ticket from the intake form:", "Forwarded by support:", "As discussed this morning,", "Morning all,",
    "Re: case follow-up -", "Note from the night shift:", "Auto-generated alert:", "Update:",
    "Can someone look at this?", "Urgent:", "Following up on yesterday:", "From the shared mailbox:",
    "Reported via chat:", "Summary of the call:", "Customer wrote in:", "Internal note:", "For review:",
    "Dear colleagues,", "New case:", "Hi all -", "Flag for today:",
)
CLOSERS = (
    "Opened by the night shift.", "Priority was set by the intake form.", "See the attached screenshot.",
    "Customer has been waiting two days.", "Second report this week.", "Flagged during the daily review.",
    "Please advise.", "Thanks.", "Need an answer by EOD.", "Logged for tracking.", "Not sure who owns this.",
    "Will update when we hear back.", "Thanks in advance!", "Call notes attached.", "Happy to jump on a call.",
    "Ticket raised automatically.", "Let me know if you need more.", "Copying the team lead.",
    "Reopened after the customer replied.", "Any help appreciated.",
)
# Clauses that name another label's vocabulary without changing the case's label (label = the one they name,
# excluded for cases of that label).
MIXED_SIGNALS: tuple[tuple[str, str], ...] = (
    ("fraud_suspected", "No fraud flags on the account."),
    ("fraud_suspected", "Fraud checks were run and came back clean."),
    ("fraud_suspected", "The card is not blocked."),
    ("partner_mismatch", "The partner was copied for information only."),
    ("partner_mismatch", "Settlement with the partner reconciled fine this month."),
    ("partner_mismatch", "Amounts otherwise reconcile with the ledger."),
    ("data_quality", "The data in the extract looks clean otherwise."),
    ("data_quality", "The nightly batch ran without errors."),
    ("data_quality", "No missing fields in the record."),
    ("routing_error", "It is in the right queue."),
    ("routing_error", "Assigned to the owning team already."),
    ("routing_error", "The ticket was routed correctly by intake."),
    ("other", "The customer also asked about opening hours."),
    ("other", "Customer also wants a copy of an invoice."),
    ("other", "Unrelated: the customer likes the new app."),
)
# Contact details a ticket carries whatever its label: every case text plants PII for the redaction tests.
PII_CLAUSES = (
    "Contact: {email}.", "Callback number {phone}.", "Reply to {email}.", "Customer phone: {phone}.",
    "Card on file {card}.", "Refund account {iban}.", "ID verified: {national_id}.", "Reach them at {phone}.",
    "Email on the account: {email}.", "Payout IBAN {iban}.", "Customer can be reached at {email} or {phone}.",
    "Customer quoted card {card} on the call.",
)
SYNONYMS: dict[str, tuple[str, ...]] = {
    "ledger": ("ledger", "books", "general ledger", "GL", "internal records", "accounting system"),
    "partner": ("Partner", "Acquirer", "PSP", "Processor", "Payment partner", "Provider"),
    "customer": ("customer", "client", "cardholder", "account holder", "user", "consumer"),
    "transaction": ("transaction", "payment", "transfer", "operation", "booking", "txn"),
    "queue": ("queue", "worklist", "inbox", "backlog", "desk", "bucket"),
    "settlement report": ("settlement report", "settlement file", "payout statement", "remittance report",
                          "settlement statement", "clearing report"),
    "discrepancy": ("discrepancy", "difference", "gap", "variance", "delta", "break"),
    "several": ("several", "multiple", "a number of", "dozens of", "quite a few", "many"),
}
# Cases deliberately written across two labels: the golden answer is the first label.
AMBIGUOUS: tuple[tuple[str, str], ...] = (
    ("partner_mismatch", "Partner {partner} disputes {n} transactions; some of the card payments look unusual "
     "but the amounts differ from our ledger by {amount} EUR."),
    ("data_quality", "Routing of {n} settlement rows failed because the partner id column is empty in the "
     "extract from {system}."),
    ("fraud_suspected", "Customer {email} complains that a refund never arrived, and the card {card} then "
     "showed {n} small test payments from abroad."),
    ("routing_error", "A duplicate-payment complaint from {email} was sent to the data team; it is a customer "
     "service matter, nothing is wrong in the data."),
    ("partner_mismatch", "The {system} file shows {partner}'s fee as {amount} EUR while the contract says "
     "{amount2} EUR; the file itself is well formed."),
    ("fraud_suspected", "Ticket in the wrong queue: a customer reports {n} payments they never made from "
     "card {card}."),
)

ABBREVIATIONS = (
    (r"\btransactions\b", "txns"), (r"\btransaction\b", "txn"), (r"\baccount\b", "acct"),
    (r"\breference\b", "ref"), (r"\bcustomer\b", "cust"), (r"\bpayments\b", "pmts"), (r"\bpayment\b", "pmt"),
    (r"\binformation\b", "info"), (r"\bplease\b", "pls"), (r"\bbecause\b", "bc"), (r"\bwith\b", "w/"),
    (r"\bnumber\b", "no."), (r"\bsettlement\b", "stlmt"), (r"\bapproximately\b", "approx."),
)


def split_of(part: str) -> Split:
    """The split a part belongs to: its rank by sha256 among the parts of its list (see `assign_splits`)."""
    return _SPLIT_OF.get(part, "train")


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def assign_splits(parts: Sequence[str]) -> dict[str, Split]:
    """Half of a list to train, a quarter each to validation and held_out, by sha256 order: fixed, not random."""
    ordered = sorted(parts, key=_hash)
    result: dict[str, Split] = {}
    for rank, part in enumerate(ordered):
        position = rank / len(ordered)
        result[part] = next(s for s, upper in SPLIT_SHARES if position < upper)
    return result


_SPLIT_OF: dict[str, Split] = {}
for _label in sorted({f.label for f in FAMILIES}):
    _SPLIT_OF.update(assign_splits([f.id for f in FAMILIES if f.label == _label]))
_SPLIT_OF.update(assign_splits(OPENERS))
_SPLIT_OF.update(assign_splits(CLOSERS))
_SPLIT_OF.update(assign_splits(PII_CLAUSES))
_SPLIT_OF.update(assign_splits([text for _, text in MIXED_SIGNALS]))
_SPLIT_OF.update(assign_splits([text for _, text in AMBIGUOUS]))
for _concept, _variants in SYNONYMS.items():
    _SPLIT_OF.update({f"syn:{_concept}:{v}": s for v, s in assign_splits(
        [f"syn:{_concept}:{v}" for v in _variants]).items()})


def _in_split(parts: Sequence, split: Split | None, key=lambda p: p) -> list:
    chosen = [p for p in parts if split is None or split_of(key(p)) == split]
    return chosen or list(parts)


def families(label: str, split: Split | None = None) -> list[Family]:
    return _in_split([f for f in FAMILIES if f.label == label], split, key=lambda f: f.id)


def ambiguous(split: Split | None = None) -> list[tuple[str, str]]:
    return _in_split(AMBIGUOUS, split, key=lambda a: a[1])


# -- noise, applied to the template outside `{slots}` so no PII value is ever altered -----------------

_SLOT = re.compile(r"(\{[a-z_0-9]+\})")
_CONCEPT = re.compile(r"\[\[([a-z ]+)\]\]")
_PII_SLOT = re.compile(r"\{(email|card|phone|iban|national_id)\}")


def _outside_slots(text: str, change) -> str:
    return "".join(piece if _SLOT.fullmatch(piece) else change(piece) for piece in _SLOT.split(text))


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 2)
    kind = rng.randrange(3)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]  # swap two letters
    if kind == 1:
        return word[:i] + word[i + 1:]  # drop one
    return word[:i] + word[i] + word[i:]  # double one


def _add_typos(text: str, rng: random.Random, count: int) -> str:
    pieces = _SLOT.split(text)
    candidates = [(p, m.start(), m.end()) for p, piece in enumerate(pieces) if not _SLOT.fullmatch(piece)
                  for m in re.finditer(r"\b[a-z]{6,}\b", piece)]
    # Right to left, so an edit never moves the position of the next one.
    for p, start, end in sorted(rng.sample(candidates, min(count, len(candidates))), reverse=True):
        piece = pieces[p]
        pieces[p] = piece[:start] + _typo(piece[start:end], rng) + piece[end:]
    return "".join(pieces)


def _abbreviate(text: str, rng: random.Random) -> str:
    for pattern, short in ABBREVIATIONS:
        if rng.random() < 0.7:
            text = _outside_slots(text, lambda s, p=pattern, r=short: re.sub(p, r, s, flags=re.IGNORECASE))
    return text


def _sentence(clause: str) -> str:
    clause = clause.strip()
    if not clause:
        return clause
    clause = clause[0].upper() + clause[1:]
    return clause if clause[-1] in ".!?" else clause + "."


def compose(label: str, rng: random.Random, split: Split | None = None) -> tuple[str, str]:
    """A case template of `label` (slots unfilled) from the parts of `split`; returns (template, family id)."""
    def synonyms(text: str) -> str:
        return _CONCEPT.sub(lambda m: rng.choice(_in_split(
            SYNONYMS[m.group(1)], split, key=lambda v, c=m.group(1): f"syn:{c}:{v}")), text)

    family = rng.choice(families(label, split))
    core = synonyms(rng.choice(family.cores))
    details = [synonyms(d) for d in rng.sample(family.details, rng.choice((0, 1, 1, 1, 2)))]
    clauses = [core, *details]
    if len(clauses) > 1 and rng.random() < 0.3:  # clause order: a detail may come first
        clauses.insert(0, clauses.pop(rng.randrange(1, len(clauses))))
    joiner = rng.choice((". ", ". ", "; ", " - ", ", "))
    body = _sentence(joiner.join(c.strip().rstrip(".") for c in clauses))
    sentences = [body]
    if rng.random() < 0.2:
        mixed = [text for lab, text in _in_split(MIXED_SIGNALS, split, key=lambda m: m[1]) if lab != label]
        if mixed:
            sentences.insert(rng.randrange(len(sentences) + 1), rng.choice(mixed))
    if not _PII_SLOT.search(body) and rng.random() < 0.9:
        sentences.insert(rng.randrange(1, len(sentences) + 1), rng.choice(_in_split(PII_CLAUSES, split)))
    if rng.random() < 0.45:
        sentences.insert(0, rng.choice(_in_split(OPENERS, split)))
    if rng.random() < 0.5:
        sentences.append(rng.choice(_in_split(CLOSERS, split)))
    return vary_surface(" ".join(sentences), rng), family.id


def vary_surface(text: str, rng: random.Random) -> str:
    """Abbreviations, typos and casing, as people type them; `{slots}` are left alone."""
    if rng.random() < 0.25:
        text = _abbreviate(text, rng)
    if rng.random() < 0.3:
        text = _add_typos(text, rng, rng.choice((1, 1, 2)))
    casing = rng.random()
    if casing < 0.12:
        text = _outside_slots(text, str.lower)
    elif casing < 0.16:
        text = _outside_slots(text, str.upper)
    elif casing < 0.28:  # a hasty note: lower-case start, no final stop
        text = (text[:1].lower() + text[1:]).rstrip(".")
    return text
