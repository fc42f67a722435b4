"""The kinds of synthetic prompt a program can check: seeded template prompts, and the test of a reply to one.

`synth` writes arithmetic, "list N things", capital-city and one-word-translation prompts from templates (seeded)
because the base drifts off these kinds when it writes its own, and keeps a reply only when it is right: the
result of the sum, N distinct items, the capital in our table, the word in our table. The tables here are apart
from the instruction check's (instructify/evals/instructions.py): other countries, other words, other list topics; arithmetic
shares the check's operand ranges but `instructions.touches` drops any prompt holding a check item's two operands.
So the check measures what the model learnt to do, not answers it saw.

Our own code because TRL has no offline data generation; the judges are the instruction check's own.
"""

from __future__ import annotations

import random
import re

from instructify.evals import instructions

LIST_TOPICS = [
    "colours of the rainbow", "things to pack for a picnic", "healthy breakfast foods", "things to do in winter",
    "jobs in a hospital", "ways to save energy at home", "famous scientists", "insects", "herbs used in cooking",
    "rivers in Europe", "things you need to bake bread", "games children play outside", "parts of a bicycle",
    "dog breeds", "ingredients of a salad", "tools in a toolbox", "cities in Italy", "summer activities",
    "things that are round", "types of weather",
]  # fmt: skip
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}

CAPITALS = {  # none of them in instructions.CAPITALS; countries with one capital people agree on
    "Afghanistan": "Kabul", "Albania": "Tirana", "Algeria": "Algiers", "Angola": "Luanda", "Armenia": "Yerevan",
    "Azerbaijan": "Baku", "Bangladesh": "Dhaka", "Belarus": "Minsk", "Bulgaria": "Sofia", "Cambodia": "Phnom Penh",
    "Croatia": "Zagreb", "Ecuador": "Quito", "Estonia": "Tallinn", "Ghana": "Accra", "Iceland": "Reykjavik",
    "Jamaica": "Kingston", "Jordan": "Amman", "Kazakhstan": "Astana", "Laos": "Vientiane", "Latvia": "Riga",
    "Lebanon": "Beirut", "Libya": "Tripoli", "Lithuania": "Vilnius", "Malaysia": "Kuala Lumpur",
    "Mongolia": "Ulaanbaatar", "Nepal": "Kathmandu", "Nicaragua": "Managua", "North Korea": "Pyongyang",
    "Paraguay": "Asuncion", "Qatar": "Doha", "Senegal": "Dakar", "Serbia": "Belgrade", "Slovakia": "Bratislava",
    "Slovenia": "Ljubljana", "Sudan": "Khartoum", "Syria": "Damascus", "Tunisia": "Tunis", "Uganda": "Kampala",
    "Uruguay": "Montevideo", "Venezuela": "Caracas", "Zimbabwe": "Harare", "Zambia": "Lusaka",
    "Costa Rica": "San Jose", "Honduras": "Tegucigalpa", "El Salvador": "San Salvador",
    "the Dominican Republic": "Santo Domingo", "Cyprus": "Nicosia", "Malta": "Valletta",
    "Uzbekistan": "Tashkent", "Oman": "Muscat", "Mali": "Bamako", "Cameroon": "Yaounde",
    "Madagascar": "Antananarivo", "Mozambique": "Maputo", "Namibia": "Windhoek", "Botswana": "Gaborone",
    "Rwanda": "Kigali", "the United States": "Washington", "Scotland": "Edinburgh", "Wales": "Cardiff",
    "Texas": "Austin", "California": "Sacramento", "Florida": "Tallahassee", "Massachusetts": "Boston",
    "Colorado": "Denver", "Arizona": "Phoenix", "Hawaii": "Honolulu",
}  # fmt: skip
CAPITAL_PROMPTS = [
    "What is the capital of {}?", "Which city is the capital of {}?", "Name the capital city of {}.",
    "What city is the capital of {}?",
]  # fmt: skip

WORDS = {  # English word: (Spanish, French, German), none in instructions.TRANSLATIONS; None where unclear
    "bird": ("pájaro", "oiseau", "Vogel"), "car": ("coche", "voiture", "Auto"), "boy": ("niño", "garçon", "Junge"),
    "girl": ("niña", "fille", "Mädchen"), "man": ("hombre", "homme", "Mann"), "child": ("niño", "enfant", "Kind"),
    "food": ("comida", "nourriture", "Essen"), "love": ("amor", "amour", "Liebe"), "year": ("año", None, "Jahr"),
    "black": ("negro", "noir", "schwarz"), "white": ("blanco", "blanc", "weiß"),
    "yellow": ("amarillo", "jaune", "gelb"), "big": ("grande", "grand", "groß"),
    "small": ("pequeño", "petit", "klein"), "good": ("bueno", "bon", "gut"), "head": ("cabeza", "tête", "Kopf"),
    "mother": ("madre", "mère", "Mutter"), "father": ("padre", "père", "Vater"),
    "brother": ("hermano", "frère", "Bruder"), "king": ("rey", "roi", "König"),
    "horse": ("caballo", "cheval", "Pferd"), "cow": ("vaca", "vache", "Kuh"), "salt": ("sal", "sel", "Salz"),
    "wine": ("vino", "vin", "Wein"), "beer": ("cerveza", "bière", "Bier"), "rain": ("lluvia", "pluie", "Regen"),
    "snow": ("nieve", "neige", "Schnee"), "fire": ("fuego", "feu", "Feuer"), "sea": ("mar", "mer", "Meer"),
    "mountain": ("montaña", "montagne", "Berg"), "church": ("iglesia", "église", "Kirche"),
    "money": ("dinero", "argent", "Geld"), "morning": ("mañana", "matin", "Morgen"),
    "week": ("semana", "semaine", "Woche"), "four": ("cuatro", "quatre", "vier"),
    "five": ("cinco", "cinq", "fünf"), "yes": ("sí", "oui", "ja"), "kitchen": ("cocina", "cuisine", "Küche"),
    "bed": ("cama", "lit", "Bett"), "shoe": ("zapato", "chaussure", "Schuh"),
    "garden": ("jardín", "jardin", "Garten"), "sky": ("cielo", "ciel", "Himmel"),
    "star": ("estrella", "étoile", "Stern"), "coffee": ("café", "café", "Kaffee"),
    "old": ("viejo", "vieux", "alt"), "new": ("nuevo", "nouveau", "neu"), "cold": ("frío", "froid", "kalt"),
    "hot": ("caliente", "chaud", "heiß"), "goodbye": ("adiós", "au revoir", "auf Wiedersehen"),
}  # fmt: skip
WORDS_ALSO = {"coche": ["carro", "auto"], "weiß": ["weiss"], "groß": ["gross"], "heiß": ["heiss"]}
TRANSLATION_PROMPTS = [
    "Translate '{}' into {}.", "How do you say '{}' in {}?", "What is the {1} word for '{0}'?",
    "What is '{}' in {}?",
]  # fmt: skip

FACTS = {  # yes/no questions for improve's rounds; none is, or gives away, a fact of the check or the second set
    **dict.fromkeys([
        "Is the Earth round?", "Do cats have whiskers?", "Is a rose a flower?", "Is copper a metal?",
        "Do frogs live near water?", "Is Vienna in Austria?", "Is Madrid in Spain?", "Do ducks swim?",
        "Is the Sahara a desert?", "Is two an even number?", "Is fifty greater than ten?", "Is a bee an insect?",
        "Does a car have an engine?", "Do people sleep at night?", "Is a banana a fruit?", "Is Everest a mountain?",
        "Does a spider spin webs?", "Is German spoken in Austria?", "Is a violin a musical instrument?",
        "Is the Atlantic an ocean?", "Is a hammer a tool?", "Do camels live in deserts?", "Is fire hot?",
        "Does a minute have sixty seconds?", "Does a clock tell the time?", "Is a horse an animal?",
        "Do apples grow on trees?", "Is Lisbon in Portugal?", "Do fish have fins?", "Is football a sport?",
        "Is Venus a planet?", "Is six more than four?", "Do dogs bark?", "Is a potato a vegetable?",
        "Do children go to school?", "Is the Thames a river?", "Is milk a drink?",
        "Does a tricycle have three wheels?", "Is Italian spoken in Italy?", "Is a cow an animal?",
    ], "yes"),
    **dict.fromkeys([
        "Is the Earth a star?", "Do cats bark?", "Is a rose a tree?", "Is copper a gas?", "Is Madrid in France?",
        "Is a cucumber blue?", "Do ducks have fur?", "Is the Sahara an ocean?", "Is two an odd number?",
        "Is ten greater than fifty?", "Is a bee a bird?", "Do fish have legs?", "Is a banana a vegetable?",
        "Is Everest in Europe?", "Is a violin a drum?", "Is the Atlantic a lake?", "Is a hammer a fruit?",
        "Do camels live in the Arctic?", "Is fire cold?", "Does an hour have ten minutes?", "Is a horse a bird?",
        "Do apples grow underground?", "Is Lisbon in Brazil?", "Is the Sun cold?", "Is football played on ice?",
        "Is Venus a moon?", "Is four more than six?", "Do dogs meow?", "Do trees walk?", "Is the Thames in France?",
        "Is milk green?", "Does a tricycle have two wheels?", "Is a week longer than a year?",
        "Is a potato a fruit?", "Is gold a liquid at room temperature?", "Do snails run fast?",
        "Is a mouse bigger than a cow?", "Is Vienna in Australia?", "Is a pencil a food?", "Do cows fly?",
    ], "no"),
}  # fmt: skip

# Phrasings of improve's rounds with `improve.phrasings: varied`: none of the check's (instructions.py) nor the
# second set's (second_set.ASKED); synth's that are not the check's are kept. Why: with synth's alone a round asks
# the check's own phrasings, and the second round's gain on the check did not carry to the second set.
ROUND_ASKED = {
    "arithmetic": ["What's {a} {op} {b}?", "Solve {a} {op} {b}.", "Quick question: what is {a} {op} {b}?",
                   "What does {a} {op} {b} make?", "{a} {op} {b} = ?"],
    "list": ["Please list {} {}.", "Could you give me {} {}?", "Quick question: can you name {} {}?",
             "I'd like {} {}, please."],
    "capital": [CAPITAL_PROMPTS[3], "Could you tell me the capital of {}?", "Quick question: what is the capital of {}?",
                "Please name the capital of {}.", "I need the capital of {}."],
    "translate": [TRANSLATION_PROMPTS[3], "How would I say '{}' in {}?", "Please translate '{}' into {}.",
                  "Quick question: how do you say '{}' in {}?", "'{}' in {}, please."],
}  # fmt: skip
# How a list prompt of synth's or ROUND_ASKED's asks for N things; the number word is captured.
LIST_LEAD = re.compile(
    r"^(?:quick question: )?(?:please |could you |can you )?(?:list|name|give me|i'd like) (\w+) ", re.I
)

ARITHMETIC = re.compile(r"(\d+)\s*(plus|\+|minus|-|times|×|\*|x|multiplied by|divided by|/)\s*(\d+)", re.I)
QUOTED = re.compile(r"'([^']+)'")
TEMPLATED = ("arithmetic", "list", "capital", "translate")  # the kinds `synth` has `prompts` write
ROUND_KINDS = (*TEMPLATED, "yes/no")  # what improve's rounds and headroom ask (synth's data predates yes/no)
WRONG = (
    "wrong arithmetic",
    "wrong number of items",
    "wrong capital",
    "wrong translation",
    "wrong yes/no",
)  # what `wrong` says
LANGS = instructions.LANGUAGES
CITIES = [*instructions.CITIES, *CAPITALS.values()]  # what "the first city named" is looked for among


def prompts(kind: str, n: int, rng: random.Random, varied: bool = False) -> list[str]:
    """`n` seeded prompts of a templated kind (one of ROUND_KINDS), in synth's phrasings or, `varied`, in
    ROUND_ASKED's (the same draws otherwise, so synth's prompts do not move)."""
    out = []
    asked = lambda own: rng.choice(ROUND_ASKED[kind] if varied else own)  # noqa: E731
    for _ in range(n):
        if kind == "arithmetic":  # the check's operand ranges; `touches` drops its exact pairs
            op = rng.choice(["plus", "minus", "times", "+", "-", "×"])
            if op in ("times", "×"):
                a, b = rng.randint(2, 12), rng.randint(2, 12)
            else:
                a, b = rng.randint(10, 60), rng.randint(2, 40)
                a, b = (a, b) if op not in ("minus", "-") or a > b else (b, a)
            out.append(asked(["What is {a} {op} {b}?", "Calculate {a} {op} {b}."]).format(a=a, op=op, b=b))
        elif kind == "list":
            topic, k = rng.choice(LIST_TOPICS), rng.choice(list(NUMBERS))
            out.append(asked(["List {} {}.", "Name {} {}.", "Give me {} {}."]).format(NUMBERS[k], topic))
        elif kind == "capital":
            out.append(asked(CAPITAL_PROMPTS).format(rng.choice(sorted(CAPITALS))))
        elif kind == "translate":
            word, lang = rng.choice([(w, lang) for w, ts in WORDS.items() for lang, t in zip(LANGS, ts) if t])
            out.append(asked(TRANSLATION_PROMPTS).format(word, lang))
        elif kind == "yes/no":
            out.append(rng.choice(sorted(FACTS)))
        else:
            raise ValueError(f"no templated prompts of kind {kind!r}; one of {', '.join(ROUND_KINDS)}")
    return out


def arithmetic_result(prompt: str) -> str | None:
    """The answer to a prompt holding one `A op B` with a whole result, else None (not checkable here)."""
    found = ARITHMETIC.findall(prompt)
    if len(found) != 1:
        return None
    a, op, b = found[0]
    x, y, op = int(a), int(b), op.lower()
    if op in ("divided by", "/"):
        return str(x // y) if y and not x % y else None
    return str(x + y if op in ("plus", "+") else x - y if op in ("minus", "-") else x * y)


def capital_answer(prompt: str) -> str | None:
    """The capital a prompt asks for, when its place is in our table (CAPITALS), else None."""
    if not re.search(r"\bcapital\b", prompt, re.IGNORECASE):
        return None
    named = (c for p, c in CAPITALS.items() if re.search(rf"\b{p.removeprefix('the ')}\b", prompt, re.I))
    return next(named, None)


def translation_answer(prompt: str) -> str | None:
    """The word a translation prompt asks for, when its word and language are in our table (WORDS)."""
    quoted = QUOTED.findall(prompt)
    lang = next((lang for lang in LANGS if re.search(rf"\b{lang}\b", prompt)), None)
    if len(quoted) != 1 or lang is None:
        return None
    return WORDS.get(quoted[0].strip().lower(), (None,) * len(LANGS))[LANGS.index(lang)]


def yesno_answer(prompt: str) -> str | None:
    """'yes' or 'no' for a question of our table (FACTS), else None."""
    return FACTS.get(prompt.strip())


def wrong(prompt: str, reply: str) -> str | None:
    """Why a reply to a prompt we can check is wrong (its counted reason), or None (right, or not checkable)."""
    if (result := arithmetic_result(prompt)) is not None:
        operands = tuple(ARITHMETIC.findall(prompt)[0][::2])
        if not instructions.judge_arithmetic(
            instructions.Item("", "arithmetic", prompt, result, operands), reply
        ):
            return "wrong arithmetic"
    if wrong_count(prompt, reply):
        return "wrong number of items"
    city = capital_answer(prompt)
    if city and not instructions.judge_capital(instructions.Item("", "capital", "", city, ()), reply, CITIES):
        return "wrong capital"
    word = translation_answer(prompt)
    if word and not instructions.judge_translation(
        instructions.Item("", "translation", "", word, ()), reply, WORDS_ALSO
    ):
        return "wrong translation"
    yes = yesno_answer(prompt)
    if yes and not instructions.judge_yesno(instructions.Item("", "yes/no", prompt, yes, ()), reply):
        return "wrong yes/no"
    return None


def checkable(kind: str, prompt: str) -> bool:
    """Whether a prompt of a kind that is there to be right can be checked here (else its reply is a coin toss)."""
    if kind == "arithmetic":
        return arithmetic_result(prompt) is not None
    if kind == "translate":
        return translation_answer(prompt) is not None
    return True


def wrong_count(prompt: str, reply: str) -> bool:
    """A list prompt (LIST_LEAD: "List N things.", "Could you give me N things?") whose reply does not hold N
    distinct items (the check's own count)."""
    m = LIST_LEAD.match(prompt)
    if not m or m.group(1).lower() not in NUMBERS.values():
        return False
    items = instructions.list_items(reply)
    asked = next(n for n, word in NUMBERS.items() if word == m.group(1).lower())
    return len(items) != asked or len(set(items)) != len(items)
