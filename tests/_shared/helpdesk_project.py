"""A small project that is not the demo: an IT-helpdesk agent, as a team adopting agent-release writes it.

``write_helpdesk_project(tmp_path)`` writes, under ``tmp_path``: its own tools module and scorer module (the
package ``itdesk``, beside pipeline.yaml, importable only with ``PYTHONPATH`` set to the project), its own
tool data (``data/``), system prompt, training data in the demo model family's format (two cohorts, no
``reason`` on any example: none of its tools takes a classified argument), a golden set of 48 cases in 16
clusters tagged with its own ``priority`` tag (the training data adds a small-talk intent, ``thanks``, and
the answers of its tool-less intents as ``reply``), a data contract that checks that tag, held-out live inputs and
pipeline.yaml. Everything is generated from a fixed seed, so two calls write the same bytes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

TOOLS_MODULE = '''"""The helpdesk team's tools: ``helpdesk_tools(data_dir)`` -> Strands tools over ``data_dir``."""
import json
from pathlib import Path
from typing import Any

from strands import tool


def helpdesk_tools(data_dir: Path) -> list:
    users = set(json.loads((data_dir / "users.json").read_text()))
    tickets = json.loads((data_dir / "tickets.json").read_text())
    runbook = [json.loads(line) for line in (data_dir / "runbook.jsonl").read_text().splitlines() if line]

    @tool
    def reset_password(username: str) -> dict[str, Any]:
        """Reset a user's password and text a temporary one to their phone.

        Args:
            username: The directory username, like ana.ross.
        """
        if username not in users:
            return {"found": False, "username": username}
        return {"found": True, "username": username, "status": "reset", "message": "temporary password sent"}

    @tool
    def lookup_ticket(ticket_id: str) -> dict[str, Any]:
        """Status and team of a helpdesk ticket.

        Args:
            ticket_id: The ticket id, like INC-40037.
        """
        ticket = tickets.get(ticket_id.strip().upper())
        return {"found": False, "ticket_id": ticket_id} if ticket is None else {"found": True, **ticket}

    @tool
    def search_runbook(query: str) -> dict[str, Any]:
        """Search the IT runbook for how-to articles.

        Args:
            query: What the user wants to do, in a few words.
        """
        words = set(query.lower().split())
        ranked = sorted(runbook, key=lambda a: -len(words & set(a["keywords"].split())))
        return {"query": query, "results": [{"article_id": a["article_id"], "title": a["title"]} for a in ranked[:2]]}

    return [reset_password, lookup_ticket, search_runbook]
'''

SCORERS_MODULE = '''"""The helpdesk team's own scorer."""


def cites_runbook_article():
    """1.0 when a runbook answer names the expected article id; None for the other cases."""

    def score(inputs, outputs, expectations):
        wanted = [f for f in expectations.get("expected_facts", []) if f.startswith("RB-")]
        if not wanted:
            return None
        return 1.0 if wanted[0] in outputs.get("answer", "") else 0.0

    return score
'''

PIPELINE_YAML = """\
name: helpdesk-agent-release
description: The IT-helpdesk agent, retrained and released with a canary.
tracking:
  experiment: helpdesk-agent
datasets:
  golden:
    path: datasets/golden.jsonl
    suite: datasets/golden.suite.json
train:
  data: datasets/train.jsonl
  package_group: helpdesk-model
deploy:
  endpoint_name: helpdesk-agent
  package_group: helpdesk-model
agent:
  name: helpdesk-agent
  toolset: itdesk.tools:helpdesk_tools
  system_prompt_file: prompt.txt
  tool_data_dir: data
evaluate:
  dataset: golden
  concurrency: 4
  scorers:
    - name: answer_correctness
    - name: tool_trajectory
    - name: tool_arguments
    - name: task_success
    - name: latency
    - name: tokens
    - name: cost
    - name: error
    - name: itdesk.scorers:cites_runbook_article
decide:
  primary_metric: task_success
promote:
  bake_s: 2
  guards:
    min_invocations: 4
  live_traffic:
    inputs: datasets/live.jsonl
    requests_per_s: 20
"""

USERS = [
    f"{first}.{last}" for first in ("ana", "ben", "chen", "dara", "eli", "fay") for last in ("ross", "kim")
]
TICKETS = {
    f"INC-{40000 + n * 37}": {
        "ticket_id": f"INC-{40000 + n * 37}",
        "status": ("open", "in_progress", "waiting_on_user", "resolved")[n % 4],
        "team": ("network", "desktop", "identity")[n % 3],
    }
    for n in range(60)
}
RUNBOOK = [
    ("RB-101", "Connecting to the VPN", "vpn connect remote access", ("set up vpn", "connect to the vpn")),
    ("RB-102", "Setting up MFA", "mfa two factor authenticator", ("set up mfa", "enrol in two factor")),
    ("RB-103", "Adding a network printer", "printer print add", ("add a printer", "install the printer")),
    (
        "RB-104",
        "Mapping a shared drive",
        "shared drive map network",
        ("map the shared drive", "open the share"),
    ),
]
OLD, NEW = "2026-q1", "2026-q2"
# (template = cluster, cohort, intent, text with one {slot})
TEMPLATES = [
    ("reset-old-01", OLD, "password_reset", "Please reset the password for {username}"),
    ("reset-old-02", OLD, "password_reset", "I forgot my password, my username is {username}"),
    ("reset-new-01", NEW, "password_reset", "locked out again, account {username}, can you unlock it"),
    ("reset-new-02", NEW, "password_reset", "hi it says my creds expired for {username}"),
    ("ticket-old-01", OLD, "ticket_status", "What is the status of {ticket_id}?"),
    ("ticket-old-02", OLD, "ticket_status", "Any update on ticket {ticket_id}"),
    ("ticket-new-01", NEW, "ticket_status", "has anyone picked up {ticket_id} yet??"),
    ("ticket-new-02", NEW, "ticket_status", "still waiting on {ticket_id}, who is on it"),
    ("runbook-old-01", OLD, "runbook_question", "How do I {query}?"),
    ("runbook-old-02", OLD, "runbook_question", "Is there a guide to {query}"),
    ("runbook-new-01", NEW, "runbook_question", "quick one - {query}, where are the steps"),
    ("runbook-new-02", NEW, "runbook_question", "struggling to {query} today, any docs"),
    ("human-old-01", OLD, "escalate", "I want to talk to a person"),
    ("human-old-02", OLD, "escalate", "get me a human technician now"),
    ("human-new-01", NEW, "escalate", "this bot is useless, escalate to a real engineer"),
    ("human-new-02", NEW, "escalate", "can a human from the service desk call me"),
]
# Small talk the model learns to answer (training data only), and the replies of the tool-less intents.
SMALL_TALK = [
    ("thanks-01", OLD, "thanks", "thanks, that fixed it"),
    ("thanks-02", OLD, "thanks", "great, all working now, cheers"),
]
REPLIES = {
    "escalate": "I'm handing you to a human engineer on the service desk now.",
    "thanks": "Glad it works! Anything else the IT helpdesk can do for you?",
}
PLANS = {"password_reset": ("reset_password", "username"), "ticket_status": ("lookup_ticket", "ticket_id")}
PLANS["runbook_question"] = ("search_runbook", "query")
PREFIXES = ("", "Hi, ", "hello ", "Hey team - ")
SUFFIXES = ("", " thanks", " please", "!")


def _utterance(
    rng: random.Random, template: tuple[str, str, str, str]
) -> tuple[str, list[Any], list[Any], str]:
    """(text, trajectory, spans, slot value) of one filled-in template."""
    _, _, intent, pattern = template
    prefix, suffix = rng.choice(PREFIXES), rng.choice(SUFFIXES)
    if intent not in PLANS:
        return prefix + pattern + suffix, [], [], ""
    tool, slot = PLANS[intent]
    if slot == "username":
        value = rng.choice(USERS)
    elif slot == "ticket_id":
        value = rng.choice(sorted(TICKETS))
    else:
        value = rng.choice(rng.choice(RUNBOOK)[3])
    head, tail = pattern.split("{" + slot + "}")
    start = len(prefix + head)
    text = prefix + head + value + tail + suffix
    return (
        text,
        [{"name": tool, "arguments": {slot: value}}],
        [{"label": slot, "start": start, "end": start + len(value)}],
        value,
    )


def _facts(intent: str, value: str) -> list[str]:
    if intent == "password_reset":
        return [value, "reset"]
    if intent == "ticket_status":
        return [value, TICKETS[value]["status"]]
    if intent == "runbook_question":
        return [next(article for article, _, _, queries in RUNBOOK if value in queries)]
    return ["human"]


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def _cases(rng: random.Random, prefix: str, count: int) -> list[dict[str, Any]]:
    cases = []
    for i in range(count):
        template = TEMPLATES[i % len(TEMPLATES)]
        text, trajectory, _, value = _utterance(rng, template)
        cases.append(
            {
                "id": f"{prefix}-{i + 1:03d}",
                "input": text,
                "expected_tool_calls": trajectory,
                "expected_facts": _facts(template[2], value),
                "cluster": template[0],
                "tags": {"intent": template[2], "priority": ("p1", "p2", "p3")[i % 3]},
            }
        )
    return cases


def golden_suite() -> dict[str, Any]:
    """The helpdesk golden set's data contract: its columns, its size and its own ``priority`` tag."""
    expectations: list[dict[str, Any]] = [
        {"type": "expect_column_to_exist", "kwargs": {"column": column}}
        for column in ("id", "input", "cluster")
    ]
    expectations += [
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 40, "max_value": 60}},
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "priority", "value_set": ["p1", "p2", "p3"]},
        },
    ]
    return {"name": "helpdesk-golden", "expectations": expectations}


def write_helpdesk_project(root: Path) -> Path:
    """Write the helpdesk project under ``root`` (created) and return ``root``."""
    rng = random.Random(11)
    for sub in ("itdesk", "data", "datasets"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "itdesk/__init__.py").write_text("")
    (root / "itdesk/tools.py").write_text(TOOLS_MODULE)
    (root / "itdesk/scorers.py").write_text(SCORERS_MODULE)
    (root / "prompt.txt").write_text(
        "You are ACME's IT helpdesk assistant. Use reset_password, lookup_ticket and search_runbook; never "
        "invent a ticket status; hand a user who asks for a person to a human.\n"
    )
    (root / "data/users.json").write_text(json.dumps(USERS))
    (root / "data/tickets.json").write_text(json.dumps(TICKETS))
    (root / "data/runbook.jsonl").write_text(
        _jsonl([{"article_id": a, "title": t, "keywords": k} for a, t, k, _ in RUNBOOK])
    )
    training = []
    for cohort, count in ((OLD, 300), (NEW, 300)):
        pool = [t for t in TEMPLATES + SMALL_TALK if t[1] == OLD or cohort == NEW]
        for _ in range(count):
            template = rng.choice(pool)
            text, trajectory, spans, _ = _utterance(rng, template)
            training.append(
                {
                    "id": f"T-{len(training) + 1:05d}",
                    "text": text,
                    "intent": template[2],
                    "reason": None,
                    "trajectory": trajectory,
                    "spans": spans,
                    "cohort": cohort,
                    "template": template[0],
                    "reply": REPLIES.get(template[2]),
                }
            )
    (root / "datasets/train.jsonl").write_text(_jsonl(training))
    (root / "datasets/golden.jsonl").write_text(_jsonl(_cases(rng, "HD", 48)))
    (root / "datasets/golden.suite.json").write_text(json.dumps(golden_suite(), indent=1))
    (root / "datasets/live.jsonl").write_text(_jsonl([{"input": c["input"]} for c in _cases(rng, "LV", 32)]))
    (root / "pipeline.yaml").write_text(PIPELINE_YAML)
    return root
