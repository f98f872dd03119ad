"""Indirect wording of columns: users ask about "the overall expense", not ``total_cost``.

With the ``synonyms`` feature each attribute of a generated schema is, about half the time, called by a
synonym or paraphrase of its label in every question of that schema, so a question no longer repeats the
column's words and the encoder has to learn what the names mean. The gold SQL is unchanged: it still
names the real column.
"""

from __future__ import annotations

import random

# Whole labels that read better rephrased as a unit.
PHRASES = {
    "age": ("age in years", "how old they are"), "length of stay": ("time spent in hospital", "stay duration"),
    "years of experience": ("seniority", "years in the job"), "date": ("day",),
    "city": ("town", "home town"), "country": ("nation", "country of origin"), "genre": ("style", "kind"),
    "specialty": ("field", "area of expertise"), "salary in millions": ("pay in millions", "wages in millions"),
    "founding year": ("year it was established", "year of establishment"), "quantity": ("number of units",),
    "number of screens": ("screen count",), "tickets sold": ("ticket sales", "admissions sold"),
    "rainfall": ("precipitation", "amount of rain"), "magnitude": ("strength", "size on the Richter scale"),
}
# Word-level substitutes, applied to labels without a whole-label entry.
WORDS = {
    "total": ("overall", "full"), "cost": ("expense", "price"), "price": ("cost", "charge"),
    "amount": ("sum", "value"), "fee": ("charge", "payment"), "charge": ("fee", "bill"),
    "revenue": ("income", "takings"), "type": ("kind", "sort"), "category": ("class", "group"),
    "level": ("grade", "tier"), "tier": ("level", "grade"), "status": ("state", "standing"),
    "score": ("rating", "mark"), "rating": ("score", "stars"), "count": ("number", "tally"),
    "number": ("count", "quantity"), "capacity": ("size", "maximum load"), "duration": ("length", "time taken"),
    "length": ("duration", "span"), "weight": ("mass", "heaviness"), "distance": ("length", "how far"),
    "year": ("calendar year",), "rate": ("ratio", "percentage"), "percent": ("share", "percentage"),
    "minutes": ("mins",), "days": ("number of days",), "output": ("production", "yield"),
    "yield": ("output", "production"), "volume": ("quantity", "amount"), "budget": ("funding", "spend"),
    "visitors": ("guests", "attendance"), "membership": ("plan", "subscription"), "plan": ("package", "tier"),
    "method": ("approach", "technique"), "source": ("origin",), "result": ("outcome", "verdict"),
    "outcome": ("result",), "region": ("area", "zone"), "district": ("area", "zone"), "grade": ("mark", "level"),
    "premium": ("payment", "contribution"), "credits": ("credit points",), "absences": ("missed sessions",),
    "violations": ("breaches", "infractions"), "emissions": ("pollution", "output of gas"),
    "attendance": ("turnout", "visitor numbers"), "passengers": ("riders", "travellers"),
    "delay": ("lateness",), "downloads": ("listens", "plays"), "subscribers": ("followers", "subscriptions"),
    "format": ("medium", "form"), "season": ("time of year",), "channel": ("route", "medium"),
    "position": ("role", "spot"), "experience": ("seniority", "practice"), "service": ("tenure", "work"),
}


def indirect_label(label: str, rng: random.Random) -> str:
    """A synonym or paraphrase of ``label``, or ``label`` itself when none is known.

    Args:
        label: the plain-words label of a column (``"total cost"``).
        rng: the schema's random stream (the choice is deterministic under it).

    Returns:
        The rephrased label (``"overall expense"``), never empty.

    Example:
        >>> indirect_label("total cost", random.Random(1)) != "total cost"
        True
    """
    if label in PHRASES:
        return rng.choice(PHRASES[label])
    words = label.split(" ")
    swappable = [i for i, w in enumerate(words) if w in WORDS]
    if not swappable:
        return label
    chosen = [i for i in swappable if rng.random() < 0.6] or [rng.choice(swappable)]
    return " ".join(rng.choice(WORDS[w]) if i in chosen else w for i, w in enumerate(words))
