"""Write the support example's data: 40 tickets, each answered once by a best and once by an average agent.

Deterministic (seed 0): every file here is what this script writes, so ``python make_data.py`` reproduces
them byte for byte. The dialogues are written for traitlab from phrase templates; nothing is copied.

- ``dialogues.jsonl``: 80 dialogues, roles ``customer``/``agent``, labels ``best``/``average``, ``group`` = ticket;
- ``ratings.jsonl``: a rubric's 1-5 ratings of the agent on ``traits.json``, standing in for a judge: each
  rating follows from the behaviours the template put in the dialogue, with one point of noise now and then;
- ``proposals.jsonl``: three statements per ticket about what the best agent did, as a proposing judge would
  write them (paraphrases, so that consolidation has clusters to find);
- ``prompts.jsonl``: customer openings as generation prompts for the tiny align run.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
PRODUCTS = ["blender", "headphones", "desk lamp", "coffee grinder", "backpack", "router", "keyboard", "kettle"]
ISSUES = [
    ("my {p} order is a week late", "the delayed {p} order", "the courier has it at the Leeds depot"),
    ("I was charged twice for the {p}", "the double charge for the {p}", "the second payment is a duplicate"),
    ("the {p} arrived broken", "the broken {p}", "a replacement is in stock"),
    ("I want to return the {p}", "returning the {p}", "the return label is ready"),
    ("I can't log in to track my {p}", "the login problem", "your account was locked after three tries"),
]
FEELINGS = ["That sounds really frustrating, I'm sorry.", "I understand how annoying that must be.",
            "I'm sorry you had to deal with this."]
STEPS = ["I've {fix} and you will get an email within 24 hours.", "I've {fix}; expect an update by tomorrow noon.",
         "I've {fix}, and it should be sorted within two working days."]
FIXES = {0: "asked the courier to prioritise it", 1: "refunded the duplicate payment",
         2: "sent a replacement by express", 3: "emailed you a prepaid label", 4: "unlocked your account"}
QUESTIONS = ["Is the delivery address still {addr}?", "Should the refund go to the card ending {card}?",
             "Would a call back at {time} suit you?"]
SCRIPTED = ["Thank you for contacting support.", "We apologise for any inconvenience caused.",
            "Your request has been forwarded to the relevant team.", "Please allow 5-7 business days."]
VAGUE = ["We will look into it.", "Someone will get back to you.", "Please check the website for updates."]
REPEAT = ["Can you provide your order number again?", "Please describe the issue in more detail."]
CUSTOMER_FOLLOW = ["ok thanks", "how long will that take?", "fine, but I need it soon", "great, thank you!"]

TRAITS = [
    {"id": "empathy", "text": "Acknowledges how the customer feels about the problem.", "group": "tone"},
    {"id": "next_step", "text": "Says exactly what happens next and by when.", "group": "resolution"},
    {"id": "specific", "text": "Restates the customer's particular problem in their own terms.", "group": "listening"},
    {"id": "clarify", "text": "Asks one targeted question that moves the case forward.", "group": "listening"},
    {"id": "scripted", "text": "Relies on generic, scripted phrases.", "group": "tone"},
]
PROPOSALS = {
    "empathy": ["Shows empathy for the customer's frustration.", "Acknowledges that the situation is annoying.",
                "Apologises in a personal, warm way.", "Recognises the customer's feelings before solving."],
    "next_step": ["Gives a concrete next step with a time frame.", "Promises a specific follow-up by a set time.",
                  "Explains what was already done and when it completes.", "Commits to a clear deadline."],
    "specific": ["Names the customer's exact problem back to them.", "Refers to the specific product and issue.",
                 "Shows it understood the particular case.", "Restates the problem in concrete terms."],
    "clarify": ["Asks a precise question to confirm details.", "Checks one relevant detail instead of many.",
                "Asks a targeted follow-up question.", "Confirms the address or payment detail it needs."],
}


def _dialogue(rng: random.Random, ticket: int, best: bool) -> tuple[dict, dict]:
    """One dialogue and the behaviours its agent shows (what the rubric rates)."""
    kind = ticket % len(ISSUES)
    product = PRODUCTS[ticket % len(PRODUCTS)]
    ask, topic, fact = (s.format(p=product) for s in ISSUES[kind])
    opening = f"Hi, {ask}. Order #{4100 + ticket}."
    shown = {"empathy": False, "next_step": False, "specific": False, "clarify": False, "scripted": False}
    if best:
        shown |= {"empathy": True, "specific": True, "next_step": True, "clarify": rng.random() < 0.7}
        first = f"{rng.choice(FEELINGS)} I've looked into {topic}: {fact}."
        second = rng.choice(STEPS).format(fix=FIXES[kind])
        if shown["clarify"]:
            second += " " + rng.choice(QUESTIONS).format(addr=f"{10 + ticket} Mill Lane", card=f"{1000 + 37 * ticket}",
                                                         time=f"{9 + ticket % 8}:00")
        if rng.random() < 0.2:  # even the best agents sometimes open with the script
            first = f"{SCRIPTED[0]} {first}"
            shown["scripted"] = True
    else:
        shown |= {"scripted": True, "empathy": rng.random() < 0.25, "specific": rng.random() < 0.2}
        first = rng.choice(SCRIPTED[:2]) + (f" {rng.choice(FEELINGS)}" if shown["empathy"] else "")
        first += f" Regarding {topic}, {rng.choice(VAGUE).lower()}" if shown["specific"] else f" {rng.choice(REPEAT)}"
        second = f"{rng.choice(SCRIPTED[2:])} {rng.choice(VAGUE)}"
    messages = [{"role": "customer", "content": opening}, {"role": "agent", "content": first},
                {"role": "customer", "content": rng.choice(CUSTOMER_FOLLOW)}, {"role": "agent", "content": second}]
    label = "best" if best else "average"
    return {"id": f"ticket{ticket:02d}-{label}", "group": f"ticket{ticket:02d}", "label": label,
            "messages": messages}, shown


def _rating(rng: random.Random, present: bool) -> int:
    base = rng.choice((4, 5)) if present else rng.choice((1, 2))
    return max(1, min(5, base + (rng.choice((-1, 1)) if rng.random() < 0.15 else 0)))


def main() -> None:
    rng = random.Random(0)
    dialogues, ratings, proposals, prompts = [], [], [], []
    for ticket in range(40):
        for best in (True, False):
            d, shown = _dialogue(rng, ticket, best)
            dialogues.append(d)
            ratings.append({"judge": "support-rubric", "id": d["id"],
                            "ratings": {t["id"]: _rating(rng, shown[t["id"]]) for t in TRAITS}})
        picks = rng.sample(sorted(PROPOSALS), 3)
        proposals.append({"group": f"ticket{ticket:02d}", "proposer": "handwritten",
                          "statements": [rng.choice(PROPOSALS[k]) for k in picks]})
        if ticket < 8:
            prompts.append({"id": f"p{ticket}", "prompt": "You are a customer support agent. Reply to the customer "
                            f"in two sentences.\nCustomer: {dialogues[-1]['messages'][0]['content']}"})
    for name, rows in (("dialogues", dialogues), ("ratings", ratings), ("proposals", proposals),
                       ("prompts", prompts)):
        (HERE / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (HERE / "traits.json").write_text(json.dumps({"name": "support5", "version": "1", "traits": TRAITS}, indent=2)
                                      + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
