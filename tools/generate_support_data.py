"""Generate the support domain's data (dev tooling; its output is committed under ``datasets/support``).

Usage: ``.venv/bin/python tools/generate_support_data.py [--seed 20261101] [--out datasets/support]``.
The same seed always writes byte-identical files.

What it writes:
- ``orders.json``: the fixed ``today`` and ~300 orders; ``kb.jsonl``: 40 help-centre articles.
- ``train.jsonl``: utterances with intent, ideal trajectory, labelled argument spans and a ``cohort``:
  ``2026-q2`` (older data: the first phrasing templates only, canonical order ids, explicit refund reasons)
  and ``2026-q3`` (newer data: adds informal templates, order-id variants and indirect reasons).
- ``golden.jsonl``, ``smoke.jsonl``, ``holdout_live.jsonl``: evaluation cases. Their expected tool calls and
  facts come from running the real tools on the ideal arguments. Part of each comes from templates and
  phrasings that never appear in training, and no evaluation text equals a training text (normalised), nor
  as the model sees it (digits masked too: ``as_the_model_sees``).

The slot fillers and templates below are the whole "world" of phrasings; the model learns from train.jsonl
only, so anything marked ``heldout`` is genuinely unseen by it.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

TODAY = date(2026, 11, 1)
POLICY = {
    "return_window_days": 30,
    "wrong_item_window_days": 60,
    "non_refundable_categories": ["gift_card", "perishable", "personalized", "digital"],
}
OLD_COHORT = "2026-q2"
NEW_COHORT = "2026-q3"

# --------------------------------------------------------------------------------------------------------
# World: catalogue, customers, knowledge base
# --------------------------------------------------------------------------------------------------------

CATALOGUE: list[tuple[str, str, float]] = [
    ("Wireless earbuds", "electronics", 79.99),
    ("USB-C charger", "electronics", 24.5),
    ("Bluetooth speaker", "electronics", 59.0),
    ("Smart watch", "electronics", 199.0),
    ("Laptop stand", "electronics", 39.9),
    ("Running shoes", "clothing", 89.0),
    ("Rain jacket", "clothing", 120.0),
    ("Wool sweater", "clothing", 64.5),
    ("Cotton t-shirt", "clothing", 18.0),
    ("Ceramic vase", "home", 34.0),
    ("Desk lamp", "home", 45.0),
    ("Chef's knife", "home", 72.0),
    ("Bath towel set", "home", 49.99),
    ("Cookbook", "books", 27.5),
    ("Mystery novel", "books", 14.99),
    ("Board game", "toys", 39.0),
    ("Building blocks", "toys", 54.0),
    ("Gift card", "gift_card", 50.0),
    ("Coffee beans", "perishable", 16.0),
    ("Chocolate box", "perishable", 22.0),
    ("Engraved necklace", "personalized", 95.0),
    ("Custom photo mug", "personalized", 19.0),
    ("E-book bundle", "digital", 29.0),
    ("Photo editing software", "digital", 69.0),
]

FIRST_NAMES = [
    "Maria", "James", "Aisha", "Chen", "Lukas", "Sofia", "Omar", "Priya", "Noah", "Elena", "Kenji", "Fatima",
    "Diego", "Hannah", "Ivan", "Grace", "Mateo", "Yara", "Samuel", "Leila",
]  # fmt: skip
LAST_NAMES = [
    "Garcia", "Smith", "Khan", "Wang", "Muller", "Rossi", "Haddad", "Patel", "Brown", "Popescu", "Tanaka",
    "Nguyen", "Lopez", "Schmidt", "Petrov", "Kim", "Silva", "Costa", "Okafor", "Novak",
]  # fmt: skip

# (id, category, title, body, query phrasings). The last phrasing of each article is never used in training.
KB: list[tuple[str, str, str, str, list[str]]] = [
    ("KB-001", "shipping", "Standard shipping times",
     "Standard shipping takes 3 to 5 business days within the country. Orders placed before 2 pm ship the "
     "same business day; weekends and public holidays are not business days.",
     ["how long does standard shipping take", "standard shipping time", "how many business days for standard shipping",
      "when does standard shipping usually arrive"]),
    ("KB-002", "shipping", "Express and overnight shipping",
     "Express shipping delivers in 1 to 2 business days and overnight shipping the next business day when "
     "ordered before noon. Both are chosen at checkout and cost extra.",
     ["do you offer express shipping", "overnight shipping options", "can I get overnight delivery",
      "how much is express shipping"]),
    ("KB-003", "shipping", "International shipping",
     "We ship internationally to 38 countries. International delivery takes 7 to 14 business days and customs "
     "duties are paid by the recipient.",
     ["do you ship internationally", "international shipping countries", "can you ship to other countries",
      "customs duties on international orders"]),
    ("KB-004", "shipping", "Tracking your package",
     "A tracking number is emailed when your order ships. Open the tracking link in that email or in your "
     "order history to follow the package with the carrier.",
     ["how do I track my package", "where do I find my tracking number", "tracking number missing from email",
      "tracking link for my package"]),
    ("KB-005", "shipping", "Shipping costs and free shipping",
     "Standard shipping is free on orders over $50. Below that, the standard shipping cost is $4.99; express and overnight "
     "shipping are priced at checkout.",
     ["when is shipping free", "free shipping minimum", "how much does shipping cost",
      "is there a free shipping threshold"]),
    ("KB-006", "shipping", "Changing a shipping address",
     "You can change or edit the delivery address until the order ships, from your order history. After shipping, ask "
     "the carrier to redirect the package.",
     ["change my shipping address", "update shipping address after ordering", "wrong address on my order",
      "edit the delivery address"]),
    ("KB-007", "shipping", "Lost or stolen packages",
     "If your package was marked delivered but not received, check with neighbours and wait one day. Then "
     "report it as lost or stolen and we will open a carrier claim.",
     ["package marked delivered but not received", "my parcel was stolen", "lost package",
      "delivered package is missing"]),
    ("KB-008", "shipping", "Shipping to PO boxes",
     "We deliver to PO boxes (post office box addresses) and APO/FPO military addresses with standard shipping only; express and overnight "
     "shipping need a street address.",
     ["do you deliver to po boxes", "po box shipping", "military apo fpo address",
      "can I ship to a post office box"]),
    ("KB-009", "returns", "How to start a return",
     "To return an item, start a return from your order history. The return process steps: pick the items, choose a reason and print the label. Drop the "
     "parcel at any carrier location within 14 days of starting the return.",
     ["how do I start a return", "return an item", "return process steps", "start the return process online"]),
    ("KB-010", "returns", "Return window",
     "The return deadline is 30 days from delivery for a change of mind. Damaged items have no time limit "
     "and wrong items can be reported within 60 days.",
     ["how many days do I have to return", "return window", "return deadline",
      "is there a time limit on returns"]),
    ("KB-011", "returns", "Non-refundable items",
     "Gift cards, perishable goods, personalized items and digital downloads are non-refundable unless they "
     "arrive damaged or we sent the wrong item.",
     ["which items are non-refundable", "are gift cards non-refundable", "can I return personalized items",
      "non-refundable products list"]),
    ("KB-012", "returns", "Refund processing times",
     "Approved refunds go back to the original payment method within 5 to 10 business days. Your bank may "
     "need a few more days to show the refund.",
     ["how long do refunds take", "refund processing time", "when will my refund show up",
      "refund still not processed"]),
    ("KB-013", "returns", "Return shipping labels",
     "Print a return label from your order page. Return labels are prepaid for damaged or wrong items. For a change of mind the return shipping cost of "
     "$5.99 is deducted from the refund.",
     ["do I pay for return shipping", "prepaid return label", "print a return label",
      "return shipping label cost"]),
    ("KB-014", "returns", "Exchanges",
     "We exchange clothing and shoes for a different size or colour free of charge. Start an exchange like a "
     "return and choose exchange instead of refund.",
     ["can I exchange an item", "exchange for a different size", "swap for another colour",
      "exchange instead of refund"]),
    ("KB-015", "returns", "Damaged or defective items",
     "If an item arrived broken, damaged or defective, send us a photo from your order page. Damaged items are always "
     "refundable or replaceable, with free return shipping.",
     ["what to do with a damaged item", "defective product policy", "item arrived broken what now",
      "replacement for a defective item"]),
    ("KB-016", "returns", "Wrong item received",
     "If we sent the wrong item, report it within 60 days of delivery. We send the right item or refund you, "
     "and we cover the return shipping.",
     ["what happens if I receive the wrong item", "wrong item policy", "incorrect item procedure",
      "sent the wrong item policy"]),
    ("KB-017", "account", "Resetting your password",
     "Use 'Forgot password' on the sign-in page. We email a reset link that is valid for one hour.",
     ["reset my password", "forgot password", "password reset link", "reset link expired password"]),
    ("KB-018", "account", "Creating an account",
     "Create or register a new account with your email address on the sign-up page. An account keeps your order history, "
     "addresses and saved payment methods.",
     ["how do I create an account", "sign up for an account", "register a new account",
      "benefits of creating an account"]),
    ("KB-019", "account", "Deleting your account",
     "You can close or delete your account under Settings > Privacy. Deletion permanently removes your account "
     "and order history after 14 days.",
     ["delete my account", "close my account", "account deletion", "permanently remove my account"]),
    ("KB-020", "account", "Updating your email address",
     "Change or update the email on your account under Settings > Profile. We send a confirmation link to the new address.",
     ["change my email address", "update the email on my account", "new email address for account",
      "email address change confirmation"]),
    ("KB-021", "account", "Two-factor authentication",
     "Turn on two-factor authentication under Settings > Security with an authenticator app or text messages.",
     ["enable two-factor authentication", "two factor authentication setup", "authenticator app security",
      "turn on two-factor"]),
    ("KB-022", "account", "Viewing your order history",
     "Your order history lists every order with its status, invoice and tracking link. Sign in and open "
     "Orders.",
     ["see my order history", "view past orders", "find an old order in my history",
      "download an invoice from order history"]),
    ("KB-023", "account", "Newsletter and email preferences",
     "Unsubscribe from the newsletter with the link in any marketing email, or choose which emails you get "
     "under Settings > Notifications.",
     ["unsubscribe from the newsletter", "stop marketing emails", "email preferences settings",
      "too many promotional emails"]),
    ("KB-024", "account", "Guest checkout",
     "You can buy without an account using guest checkout. Guest orders can be tracked with the order id and "
     "your email address.",
     ["can I use guest checkout", "buy without an account", "checkout as a guest", "guest order tracking"]),
    ("KB-025", "payments", "Accepted payment methods",
     "We accept Visa, Mastercard, American Express, PayPal, Apple Pay and gift cards.",
     ["what payment methods do you accept", "can I pay with paypal", "do you accept american express",
      "apple pay accepted"]),
    ("KB-026", "payments", "Gift cards",
     "Gift cards are sold in amounts from $10 to $500, never expire; redeem a gift card at checkout. Check the "
     "balance under Account > Gift cards.",
     ["how do gift cards work", "redeem a gift card", "check my gift card balance", "do gift cards expire"]),
    ("KB-027", "payments", "Promo codes and discounts",
     "Enter a promo code in the cart before checkout. One promo code per order; codes do not apply to gift "
     "cards.",
     ["my promo code does not work", "apply a discount code", "where do I enter a promo code",
      "can I combine two promo codes"]),
    ("KB-028", "payments", "Sales tax",
     "Sales tax is charged according to the delivery address and shown before you pay. Tax-exempt "
     "organisations can send us their certificate.",
     ["do you charge sales tax", "why was I charged sales tax", "sales tax on my order",
      "tax exempt certificate"]),
    ("KB-029", "payments", "Declined payments",
     "A payment can fail or be declined when the card details, billing address or limit do not match. Check them or try "
     "another payment method; we never store declined card numbers.",
     ["my card was declined", "payment declined at checkout", "why did my payment fail",
      "declined card billing address"]),
    ("KB-030", "payments", "Paying in installments",
     "Orders over $100 can be paid in four interest-free installments with our pay-later partner, chosen at "
     "checkout.",
     ["can I pay in installments", "pay later option", "interest-free installments",
      "split my payment into installments"]),
    ("KB-031", "products", "Product warranty",
     "Electronics have a 2-year warranty against manufacturing defects. Start a warranty claim from your order "
     "history with a description of the fault.",
     ["what does the warranty cover", "how long is the warranty", "make a warranty claim",
      "is my product still under warranty"]),
    ("KB-032", "products", "Size guide",
     "Each clothing page links to a size guide with measurements. Our shoes run true to size; sweaters run "
     "slightly large.",
     ["how do I find my size", "size guide", "do your sweaters run large", "size chart measurements"]),
    ("KB-033", "products", "Out-of-stock items and restocks",
     "Out-of-stock items are usually restocked within 3 weeks. Click 'Notify me' on the product page to get a "
     "restock email.",
     ["when will this be restocked", "out of stock item", "restock notification",
      "notify me when back in stock"]),
    ("KB-034", "products", "Price matching",
     "We match the price of identical new items sold by major retailers at the time of purchase. Send us a "
     "link to the lower price.",
     ["do you price match", "price match policy", "found a lower price at another retailer",
      "price matching with other stores"]),
    ("KB-035", "products", "Price adjustments after a sale",
     "If the price dropped after purchase, within 14 days, we refund the difference once as a price adjustment.",
     ["item went on sale after I bought it", "price adjustment", "price dropped after purchase",
      "refund the sale price difference"]),
    ("KB-036", "products", "Product care instructions",
     "Care instructions are on the label and the product page: wash wool cold, dry clothing flat and oil "
     "wooden boards monthly.",
     ["care instructions", "how do I wash wool", "cleaning instructions for my product",
      "how to care for a wool sweater"]),
    ("KB-037", "privacy", "Privacy and personal data",
     "We use your personal data only to run your orders and account. Request a copy of your data or its "
     "deletion under Settings > Privacy.",
     ["how do you use my personal data", "privacy policy", "request a copy of my personal data",
      "personal data deletion request"]),
    ("KB-038", "support", "Customer service hours",
     "Customer service is open Monday to Friday 8 am to 8 pm and Saturday 9 am to 5 pm. Chat with the "
     "assistant any time.",
     ["what are your customer service hours", "when is customer service open", "are you open on saturday",
      "customer service opening hours"]),
    ("KB-039", "orders", "Cancelling an order",
     "You can cancel an order from your order history until it ships. Once it has shipped, return it instead.",
     ["how do I cancel an order", "cancel my purchase", "cancel before it ships", "cancelling an order online"]),
    ("KB-040", "orders", "Gift wrapping and gift messages",
     "Add gift wrapping for $4 and a free gift message at checkout. Gift receipts show no prices.",
     ["do you offer gift wrapping", "add a gift message", "gift receipt without prices",
      "gift wrap an order"]),
]  # fmt: skip

# --------------------------------------------------------------------------------------------------------
# Phrasing templates. style: "old" (in both cohorts), "new" (newer cohort only), "heldout" (never trained on)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """One phrasing: ``key`` is the cluster key, ``text`` has slots {oid}, {reason} or {q}."""

    key: str
    intent: str
    style: str
    text: str


def _templates(intent: str, prefix: str, style: str, texts: list[str]) -> list[Template]:
    return [Template(f"{prefix}-{style}-{i:02d}", intent, style, t) for i, t in enumerate(texts, 1)]


TEMPLATES: list[Template] = [
    *_templates("order_status", "status", "old", [
        "Where is my order {oid}?",
        "What is the status of order {oid}?",
        "Can you check order {oid} for me?",
        "Has order {oid} shipped yet?",
        "I want to track my order {oid}.",
        "Status of {oid} please.",
    ]),
    *_templates("order_status", "status", "new", [
        "any update on {oid}? its been a while",
        "my package {oid} still hasn't shown up, where is it",
        "could you tell me when {oid} will get here",
        "tracking info for order number {oid}?",
        "I placed an order last week ({oid}) and haven't heard anything",
        "is {oid} out for delivery yet?",
    ]),
    *_templates("order_status", "status", "heldout", [
        "Any news about my delivery {oid}?",
        "When will order {oid} arrive?",
        "i need to know where {oid} is right now",
        "Checking in on {oid} - has it left the warehouse?",
    ]),
    *_templates("order_status", "noid", "old", ["Where is my order?", "What is the status of my order?"]),
    *_templates("order_status", "noid", "new", ["my package hasnt arrived yet, where is it", "any update on my delivery?"]),
    *_templates("order_status", "noid", "heldout", ["Can you check on my order please?"]),
    *_templates("refund_request", "refund", "old", [
        "I want a refund for order {oid}, {reason}.",
        "Refund request for {oid}: {reason}.",
        "Please refund my order {oid} because {reason}.",
        "Can I get my money back for {oid}? {reason}.",
    ]),
    *_templates("refund_request", "refund", "new", [
        "{reason} - order {oid}. I'd like my money back",
        "hi, order {oid} {reason}, how do I get refunded",
        "need to send back {oid}, {reason}",
        "{oid}: {reason}. what are my options for a refund?",
    ]),
    *_templates("refund_request", "refund", "heldout", [
        "Requesting a refund on {oid} since {reason}.",
        "ok so {reason} ({oid}). refund?",
    ]),
    *_templates("kb_question", "kb", "old", [
        "{q}?",
        "Question: {q}?",
        "Can you tell me {q}?",
        "I need help: {q}.",
    ]),
    *_templates("kb_question", "kb", "new", [
        "quick question, {q}",
        "{q}? couldn't find it on your site",
        "hey so {q}",
        "I was wondering about this - {q}",
    ]),
    *_templates("kb_question", "kb", "heldout", ["Quick one: {q}?", "I have a question. {q}?"]),
    *_templates("escalate", "escalate", "old", [
        "I want to speak to a human.",
        "Let me talk to a manager.",
        "Get me a real person.",
        "I need to talk to someone from customer service.",
    ]),
    *_templates("escalate", "escalate", "new", [
        "this bot is useless, connect me with someone who can actually help",
        "I'm going to dispute the charge with my bank unless someone calls me",
        "transfer me to an agent now",
        "stop sending me articles and put me through to a person",
    ]),
    *_templates("escalate", "escalate", "heldout", [
        "Is there a human I can chat with?",
        "I want to file a formal complaint with a supervisor.",
    ]),
    *_templates("chitchat", "chitchat", "old", ["Hello", "Hi there", "Thanks!", "Good morning"]),
    *_templates("chitchat", "chitchat", "new", [
        "thanks a lot, that's all I needed",
        "hey, how's it going",
        "you've been very helpful",
        "ok cool thanks",
    ]),
    *_templates("chitchat", "chitchat", "heldout", ["Good evening!", "Appreciate it, have a nice day"]),
]  # fmt: skip

REASON_PHRASES: dict[str, dict[str, list[str]]] = {
    "damaged": {
        "old": ["it arrived damaged", "the item is damaged", "it was broken when it arrived"],
        "new": ["the screen was cracked out of the box", "the box was crushed and it is in pieces",
                "it came with a huge scratch and a bent corner"],
        "heldout": ["it showed up shattered", "there is a big dent in it"],
    },
    "wrong_item": {
        "old": ["you sent the wrong item", "I received the wrong item", "this is not what I ordered"],
        "new": ["I ordered blue and got red", "the package had someone else's stuff in it",
                "got a size M instead of L"],
        "heldout": ["it is a totally different product than the one I picked", "you mixed up my order"],
    },
    "changed_mind": {
        "old": ["I changed my mind", "I don't want it anymore", "I no longer need it"],
        "new": ["turns out I don't really need it", "found something I like better", "it just isn't for me"],
        "heldout": ["I had second thoughts about it", "I decided to keep my old one"],
    },
    "late_delivery": {
        "old": ["it was delivered late", "it arrived late", "the delivery was late"],
        "new": ["it took forever to get here", "it came two weeks after the promised date",
                "it is way past the date you gave me"],
        "heldout": ["it showed up well after the date you promised", "shipping took much longer than promised"],
    },
}  # fmt: skip

PREFIXES = {"old": ["", "", "Hi, ", "Hello, "], "new": ["", "hey ", "Hi there! ", "Good morning. ", "ugh. "]}
SUFFIXES = {
    "old": ["", "", " Thanks!", " Thank you."],
    "new": ["", " thx", " - {name}", " Thanks in advance.", " pls"],
}


def oid_variant(rng: random.Random, oid: str, style: str) -> str:
    """How a customer writes an order id: canonical in old data, varied in newer phrasings."""
    if style == "old":
        return oid
    digits = oid.split("-")[1]
    return rng.choice([oid, oid, oid.lower(), f"#{digits}", f"ORD{digits}", digits])


# --------------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------------


def make_orders(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Random but plausible orders relative to TODAY (statuses consistent with their dates)."""
    ids = rng.sample(range(10000, 99999), n)
    orders = []
    for num in sorted(ids):
        order_date = TODAY - timedelta(days=rng.randint(1, 100))
        promised = order_date + timedelta(days=rng.randint(3, 7))
        status = rng.choices(
            ["delivered", "shipped", "processing", "cancelled", "refunded"], weights=[55, 20, 10, 8, 7]
        )[0]
        delivery: date | None = None
        if status in ("delivered", "refunded"):
            delivery = order_date + timedelta(days=rng.randint(2, 12))
            if delivery > TODAY:
                delivery, status = None, "shipped"
        if status == "processing" and (TODAY - order_date).days > 3:
            order_date = TODAY - timedelta(days=rng.randint(0, 2))
            promised = order_date + timedelta(days=rng.randint(3, 7))
        items = []
        for name, category, price in rng.sample(CATALOGUE, rng.choice([1, 1, 2, 2, 3])):
            items.append(
                {
                    "sku": f"SKU-{abs(hash_str(name)) % 100000:05d}",
                    "name": name,
                    "category": category,
                    "quantity": rng.choice([1, 1, 1, 2]),
                    "unit_price": price,
                }
            )
        orders.append(
            {
                "order_id": f"ORD-{num}",
                "customer": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
                "items": items,
                "order_date": order_date.isoformat(),
                "promised_date": promised.isoformat(),
                "delivery_date": delivery.isoformat() if delivery else None,
                "status": status,
            }
        )
    return orders


def hash_str(text: str) -> int:
    """A process-independent string hash (Python's hash() is salted per process)."""
    value = 0
    for ch in text:
        value = (value * 131 + ord(ch)) % 2**31
    return value


def normalise(text: str) -> str:
    """The form used to prove train and evaluation texts disjoint (same rule as tests/unit/test_datasets.py)."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def as_the_model_sees(text: str) -> str:
    """:func:`normalise` with every digit masked, as the demo model's sentence classifiers read a text
    (``agents/demo_model/features.intent_text``): two texts that differ only in an order id are one text
    to the model, so a training text must not be an evaluation text in this form either."""
    return re.sub(r"[0-9]", "0", normalise(text))


@dataclass
class Utterance:
    """A rendered user message with its labels."""

    text: str
    intent: str
    template: Template
    order_id: str | None = None
    reason: str | None = None
    query: str | None = None
    article_id: str | None = None
    spans: list[dict[str, Any]] = field(default_factory=list)
    difficulty: str = "easy"


def render(
    rng: random.Random,
    template: Template,
    order_ids: list[str],
    phrase_style: str,
    kb_pool: Callable[[tuple[str, str, str, str, list[str]]], list[str]],
    deco: str | None = None,
    id_style: str | None = None,
) -> Utterance:
    """Fill ``template``'s slots and decorations, recording the character spans of the arguments."""
    deco = deco or ("old" if phrase_style == "old" else "new")
    prefix = rng.choice(PREFIXES[deco])
    suffix = rng.choice(SUFFIXES[deco]).replace("{name}", rng.choice(FIRST_NAMES))
    body = template.text
    if prefix and body[:1].isupper() and not body.startswith("I "):
        body = body[0].lower() + body[1:]
    utt = Utterance(text="", intent=template.intent, template=template)
    slots: dict[str, str] = {}
    if "{oid}" in body:
        utt.order_id = rng.choice(order_ids)
        slots["oid"] = oid_variant(rng, utt.order_id, id_style or phrase_style)
    if "{reason}" in body:
        utt.reason = rng.choice(sorted(REASON_PHRASES))
        slots["reason"] = rng.choice(REASON_PHRASES[utt.reason][phrase_style])
    if "{q}" in body:
        article = rng.choice(KB)
        utt.article_id = article[0]
        utt.query = rng.choice(kb_pool(article))
        slots["q"] = utt.query
    # Render left to right so span offsets are exact.
    text = prefix
    for part in re.split(r"(\{oid\}|\{reason\}|\{q\})", body):
        if part in ("{oid}", "{reason}", "{q}"):
            name = part[1:-1]
            value = slots[name]
            if not text:
                value = value[0].upper() + value[1:]
            label = {"oid": "order_id", "reason": "reason", "q": "query"}[name]
            utt.spans.append({"label": label, "start": len(text), "end": len(text) + len(value)})
            text += value
        else:
            text += part
    utt.text = text + suffix
    hard = "heldout" in (template.style, phrase_style) or template.key.startswith("noid")
    utt.difficulty = "hard" if hard else ("medium" if template.style == "new" else "easy")
    return utt


def ideal_trajectory(utt: Utterance) -> list[dict[str, Any]]:
    """The tool calls a perfect agent plans for this utterance (before seeing any tool result)."""
    if utt.intent == "order_status" and utt.order_id:
        return [{"name": "lookup_order", "arguments": {"order_id": utt.order_id}}]
    if utt.intent == "refund_request" and utt.order_id:
        return [
            {"name": "lookup_order", "arguments": {"order_id": utt.order_id}},
            {
                "name": "check_refund_eligibility",
                "arguments": {"order_id": utt.order_id, "reason": utt.reason},
            },
        ]
    if utt.intent == "kb_question":
        return [{"name": "search_kb", "arguments": {"query": utt.query}}]
    return []


def expected_outcome(utt: Utterance, box: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Run the real tools along the ideal trajectory; return the calls made and the facts an answer must state."""
    calls: list[dict[str, Any]] = []
    facts: list[str] = []
    plan = ideal_trajectory(utt)
    if not plan:
        if utt.intent in ("order_status", "refund_request"):
            return [], ["order number"]
        return [], ["human agent"] if utt.intent == "escalate" else ["order status"]
    for step in plan:
        calls.append(step)
        result = getattr(box, step["name"])(**step["arguments"])
        if step["name"] == "lookup_order":
            if not result["found"]:
                return calls, ["could not find", utt.order_id or ""]
            if utt.intent == "order_status":
                facts = [result["order_id"], result["status"]]
                if result["status"] == "delivered":
                    facts.append(result["delivery_date"])
                elif result["status"] in ("shipped", "processing"):
                    facts.append(result["promised_date"])
        elif step["name"] == "check_refund_eligibility":
            facts = [result["order_id"], result["decision"]]
            if result["decision"] == "approved":
                facts.append(f"${result['refund_amount']:.2f}")
        elif step["name"] == "search_kb":
            top = result["results"][0]
            if top["article_id"] != utt.article_id:
                raise SystemExit(
                    f"KB phrasing {utt.query!r} retrieves {top['article_id']}, not {utt.article_id}"
                )
            facts = [top["title"]]
    return calls, facts


class Generator:
    """Draws utterances while keeping every text unique across all files."""

    def __init__(self, seed: int, box: Any, known_ids: list[str], unknown_ids: list[str]) -> None:
        self.rng = random.Random(seed)
        self.box = box
        self.known_ids = known_ids
        self.unknown_ids = unknown_ids
        self.reserved: set[str] = set()
        self.reserved_as_seen: set[str] = set()

    def draw(
        self,
        template: Template,
        phrase_style: str,
        kb_pool: Callable[[tuple[str, str, str, str, list[str]]], list[str]],
        order_ids: list[str] | None = None,
        reserve: bool = False,
        deco: str | None = None,
        id_style: str | None = None,
    ) -> Utterance:
        """An utterance whose text is not reserved; ``reserve`` claims it (evaluation texts are unique).
        A text drawn without ``reserve`` (training) is not a reserved text as the model sees it either."""
        for _ in range(500):
            utt = render(
                self.rng, template, order_ids or self.known_ids, phrase_style, kb_pool, deco, id_style
            )
            key = normalise(utt.text)
            if key in self.reserved:
                continue
            if reserve:
                self.reserved.add(key)
                self.reserved_as_seen.add(as_the_model_sees(utt.text))
                return utt
            if as_the_model_sees(utt.text) not in self.reserved_as_seen:
                return utt
        raise SystemExit(f"template {template.key} cannot produce another unreserved text")


def train_pool(article: tuple[str, str, str, str, list[str]]) -> list[str]:
    return article[4][:3]


def old_train_pool(article: tuple[str, str, str, str, list[str]]) -> list[str]:
    return article[4][:2]


def eval_pool(article: tuple[str, str, str, str, list[str]]) -> list[str]:
    return article[4]


def heldout_pool(article: tuple[str, str, str, str, list[str]]) -> list[str]:
    return article[4][3:]


OLD_NEW_DECORATION_SHARE = 0.7
OLD_ID_VARIANT_SHARE = 0.3
INTENT_WEIGHTS = {"order_status": 30, "refund_request": 30, "kb_question": 28, "escalate": 6, "chitchat": 6}


def make_train(gen: Generator, n_old: int, n_new: int) -> list[dict[str, Any]]:
    """Older cohort: old templates, explicit phrasings; newer cohort: old + new templates and phrasings."""
    rows = []
    train_ids = [f"ORD-{n}" for n in gen.rng.sample(range(10000, 99999), 2000)]
    for cohort, n, styles in ((OLD_COHORT, n_old, ("old",)), (NEW_COHORT, n_new, ("old", "new"))):
        pool = old_train_pool if cohort == OLD_COHORT else train_pool
        for _ in range(n):
            intent = gen.rng.choices(list(INTENT_WEIGHTS), weights=list(INTENT_WEIGHTS.values()))[0]
            candidates = [t for t in TEMPLATES if t.intent == intent and t.style in styles]
            template = gen.rng.choice(candidates)
            phrase_style = template.style if cohort == NEW_COHORT else "old"
            if cohort == NEW_COHORT and template.style == "old" and gen.rng.random() < 0.5:
                phrase_style = "new"
            # Greetings and sign-offs drift faster than the requests themselves: the older cohort already
            # has the newer decorations in part.
            # So do the ways customers write order ids.
            deco = "new" if gen.rng.random() < OLD_NEW_DECORATION_SHARE else None
            id_style = "new" if gen.rng.random() < OLD_ID_VARIANT_SHARE else None
            utt = gen.draw(template, phrase_style, pool, train_ids, deco=deco, id_style=id_style)
            rows.append(
                {
                    "id": f"T-{len(rows) + 1:05d}",
                    "text": utt.text,
                    "intent": utt.intent,
                    "reason": utt.reason,
                    "trajectory": ideal_trajectory(utt),
                    "spans": [s for s in utt.spans if s["label"] != "reason"],
                    "cohort": cohort,
                    "template": template.key,
                }
            )
    return rows


def make_cases(
    gen: Generator, id_prefix: str, plan: list[tuple[Template, str, int]], unknown_share: float
) -> list[dict[str, Any]]:
    """Evaluation cases: ``plan`` lists (template, phrase style, number of cases)."""
    cases = []
    for template, phrase_style, count in plan:
        for _ in range(count):
            ids = gen.unknown_ids if gen.rng.random() < unknown_share else gen.known_ids
            pool = heldout_pool if phrase_style == "heldout" else eval_pool
            utt = gen.draw(template, phrase_style, pool, ids, reserve=True)
            calls, facts = expected_outcome(utt, gen.box)
            if utt.order_id in gen.unknown_ids:
                utt.difficulty = "hard"
            cases.append(
                {
                    "id": f"{id_prefix}-{len(cases) + 1:04d}",
                    "input": utt.text,
                    "expected_tool_calls": calls,
                    "expected_facts": facts,
                    "cluster": template.key
                    if phrase_style == template.style
                    else f"{template.key}/{phrase_style}",
                    "tags": {"intent": utt.intent, "difficulty": utt.difficulty},
                }
            )
    return cases


def evaluation_plan(
    rng: random.Random, per_template: int, heldout_phrasings: bool
) -> list[tuple[Template, str, int]]:
    """Every template once at its own style; old templates again with held-out phrasings when asked."""
    plan = []
    for t in TEMPLATES:
        count = 3 if t.key.startswith(("escalate", "chitchat", "noid")) else per_template
        plan.append((t, t.style, count))
        if heldout_phrasings and t.style == "old" and ("{reason}" in t.text or "{q}" in t.text):
            plan.append((t, "heldout", 3))
    rng.shuffle(plan)
    return plan


INTENTS = ["order_status", "refund_request", "kb_question", "escalate", "chitchat"]
TOOL_SEQUENCE = r"^(?:(?:lookup_order|check_refund_eligibility|search_kb)(?:,(?:lookup_order|check_refund_eligibility|search_kb))*)?$"


def contract_suite(
    name: str,
    min_rows: int,
    max_rows: int,
    min_cluster_size: int,
    max_cluster_size: int,
    min_clusters: int,
) -> dict[str, Any]:
    """The Great Expectations suite (JSON form) guarding one evaluation set.

    It runs on the flattened table ``steps/validate_datasets.py`` builds: one row per case with ``intent`` and
    ``difficulty`` from ``tags``, ``expected_tools`` (comma-joined names), ``n_expected_facts`` and
    ``cluster_size`` (cases sharing the row's cluster). The cluster expectations keep the clustered comparison
    meaningful: enough distinct clusters, none of them swallowing the set. A ``cluster_size`` minimum of 1 is
    left out, since every row's cluster holds at least that row: it could never fail.
    """

    def exp(kind: str, **kwargs: Any) -> dict[str, Any]:
        return {"type": kind, "kwargs": kwargs, "meta": {}}

    columns = ["id", "input", "expected_tools", "n_expected_facts", "cluster", "intent", "difficulty"]
    return {
        "name": name,
        "expectations": [
            *(exp("expect_column_to_exist", column=c) for c in columns),
            exp("expect_table_row_count_to_be_between", min_value=min_rows, max_value=max_rows),
            *(
                exp("expect_column_values_to_not_be_null", column=c)
                for c in ("id", "input", "cluster", "intent")
            ),
            exp("expect_column_values_to_be_unique", column="id"),
            exp("expect_column_values_to_match_regex", column="id", regex=r"^[A-Z]-\d{4}$"),
            exp("expect_column_values_to_be_in_set", column="intent", value_set=INTENTS),
            exp(
                "expect_column_values_to_be_in_set", column="difficulty", value_set=["easy", "medium", "hard"]
            ),
            exp("expect_column_value_lengths_to_be_between", column="input", min_value=2, max_value=300),
            exp("expect_column_values_to_match_regex", column="expected_tools", regex=TOOL_SEQUENCE),
            exp("expect_column_values_to_be_between", column="n_expected_facts", min_value=1, max_value=6),
            exp(
                "expect_column_values_to_be_between",
                column="cluster_size",
                **({"min_value": min_cluster_size} if min_cluster_size > 1 else {}),
                max_value=max_cluster_size,
            ),
            exp("expect_column_unique_value_count_to_be_between", column="cluster", min_value=min_clusters),
        ],
        "meta": {"great_expectations_version": "1.24.1", "generated_by": "tools/generate_support_data.py"},
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20261101)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "datasets" / "support"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from agent_release.agents.support.tools import SupportToolbox

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    orders = make_orders(rng, 300)
    (out / "orders.json").write_text(
        json.dumps({"today": TODAY.isoformat(), "orders": orders}, indent=1) + "\n", encoding="utf-8"
    )
    # policy.md (hand-written) states the same rules; tests/unit/test_support_tools.py checks they agree.
    (out / "policy.json").write_text(json.dumps(POLICY, indent=2) + "\n", encoding="utf-8")
    write_jsonl(out / "kb.jsonl", [{"id": a, "title": t, "category": c, "body": b} for a, c, t, b, _ in KB])
    box = SupportToolbox(out)
    known = sorted(box.data.orders)
    unknown = [f"ORD-{n}" for n in rng.sample(range(10000, 99999), 400) if f"ORD-{n}" not in box.data.orders]

    gen = Generator(args.seed + 1, box, known, unknown)
    # Evaluation sets are drawn first so their texts are reserved; training then avoids them.
    golden = make_cases(gen, "G", evaluation_plan(gen.rng, 7, heldout_phrasings=True), unknown_share=0.06)
    smoke_plan = [(t, t.style, 3) for t in gen.rng.sample([t for t in TEMPLATES if "{" in t.text], 10)]
    smoke = make_cases(gen, "S", smoke_plan, unknown_share=0.0)
    live_plan = [(t, t.style, 1) for t in TEMPLATES] + [
        (t, t.style, 1)
        for t in gen.rng.choices([t for t in TEMPLATES if "{" in t.text], k=100 - len(TEMPLATES))
    ]
    live = make_cases(gen, "L", live_plan, unknown_share=0.03)
    train = make_train(gen, n_old=600, n_new=1800)

    write_jsonl(out / "golden.jsonl", golden)
    write_jsonl(out / "smoke.jsonl", smoke)
    write_jsonl(out / "holdout_live.jsonl", live)
    write_jsonl(out / "train.jsonl", train)
    for name, rows, min_cluster in (("golden", golden, 3), ("smoke", smoke, 3), ("holdout_live", live, 1)):
        sizes = Counter(r["cluster"] for r in rows)
        # The same slack as the row count: a tenth fewer clusters, clusters up to twice the largest generated.
        suite = contract_suite(
            name,
            min_rows=len(rows) - len(rows) // 10,
            max_rows=2 * len(rows),
            min_cluster_size=min_cluster,
            max_cluster_size=2 * max(sizes.values()),
            min_clusters=len(sizes) - len(sizes) // 10,
        )
        (out / f"{name}.suite.json").write_text(json.dumps(suite, indent=1) + "\n", encoding="utf-8")
    sys.stderr.write(
        f"wrote train={len(train)} golden={len(golden)} smoke={len(smoke)} holdout_live={len(live)} "
        f"orders={len(orders)} kb={len(KB)} to {out}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
