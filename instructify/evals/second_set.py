"""A second instruction check: the same five kinds and judges, its own tables, phrasings and seed.

A round on the model's own answers (instructify/improve.py) trains on prompts written by `checkable`'s templates,
whose phrasings are the check's; a gain that holds here too is no fit to those templates or tables. Nothing
here is in the check's tables (instructify/evals/instructions.py) or in `synth`'s and `improve`'s
(instructify/evals/checkable.py): other places, words, facts and list topics, other phrasings, and arithmetic
operands outside the ranges both draw from (so a × item is a little harder: 13-19 times 2-5).
"""

from __future__ import annotations

import random

from instructify.evals import checkable, instructions
from instructify.evals.instructions import Item

FILE = "instructions-second.json"
SEED = 2

CAPITALS = {  # none in either table; places whose name is no city of CITIES (a reply echoing it is not wrong)
    "Panama": "Panama City", "Guatemala": "Guatemala City", "Haiti": "Port-au-Prince",
    "Trinidad and Tobago": "Port of Spain", "the Bahamas": "Nassau", "Barbados": "Bridgetown",
    "Belize": "Belmopan", "Guyana": "Georgetown", "Suriname": "Paramaribo", "Moldova": "Chisinau",
    "Bosnia and Herzegovina": "Sarajevo", "North Macedonia": "Skopje", "Montenegro": "Podgorica",
    "Andorra": "Andorra la Vella", "Liechtenstein": "Vaduz", "Kyrgyzstan": "Bishkek", "Tajikistan": "Dushanbe",
    "Turkmenistan": "Ashgabat", "Bhutan": "Thimphu", "Brunei": "Bandar Seri Begawan", "Yemen": "Sanaa",
    "Kuwait": "Kuwait City", "Bahrain": "Manama", "the United Arab Emirates": "Abu Dhabi",
    "Burkina Faso": "Ouagadougou", "Niger": "Niamey", "Chad": "N'Djamena", "Sierra Leone": "Freetown",
    "Liberia": "Monrovia", "Guinea": "Conakry", "Togo": "Lome", "Gabon": "Libreville",
    "the Democratic Republic of the Congo": "Kinshasa", "Malawi": "Lilongwe", "Eritrea": "Asmara",
    "Somalia": "Mogadishu", "Mauritania": "Nouakchott", "the Gambia": "Banjul", "Lesotho": "Maseru",
    "Fiji": "Suva", "Papua New Guinea": "Port Moresby", "Samoa": "Apia", "Mauritius": "Port Louis",
    "the Maldives": "Male", "Northern Ireland": "Belfast", "Illinois": "Springfield",
    "Pennsylvania": "Harrisburg", "Nevada": "Carson City", "Ontario": "Toronto", "Quebec": "Quebec City",
    "Alberta": "Edmonton", "Queensland": "Brisbane",
}  # fmt: skip
ALSO = {"Sanaa": ["Sana'a", "Sana"], "N'Djamena": ["Ndjamena"], "Port of Spain": ["Port-of-Spain"],
        "Port-au-Prince": ["Port au Prince"], "Ashgabat": ["Ashkhabad"]}  # fmt: skip
DISTRACTORS = [  # where a wrong answer to one of these often goes, with every city the other tables know
    "Dar es Salaam", "Yangon", "Chicago", "Philadelphia", "Pittsburgh", "Las Vegas", "Reno", "Calgary",
    "Gold Coast", "Jeddah", "Douala", "Lubumbashi", "Colon", "Nadi", "Bobo-Dioulasso", "Mombasa",
    "Port Harcourt", "Almaty", "Durban", "Derry", "Sarande", "Ottawa", "Montreal",
    *instructions.CITIES, *checkable.CAPITALS.values(),
]  # fmt: skip
CITIES = [*CAPITALS.values(), *[a for v in ALSO.values() for a in v], *DISTRACTORS]

TRANSLATIONS = {  # English word: (Spanish, French, German); None where unclear or the word is also English
    "river": ("río", "rivière", "Fluss"), "key": ("llave", "clé", "Schlüssel"), "cheese": ("queso", "fromage", "Käse"),
    "sugar": ("azúcar", "sucre", "Zucker"), "meat": ("carne", "viande", "Fleisch"),
    "chicken": ("pollo", "poulet", "Huhn"), "spoon": ("cuchara", "cuillère", "Löffel"),
    "knife": ("cuchillo", "couteau", "Messer"), "shirt": ("camisa", "chemise", "Hemd"),
    "hat": ("sombrero", "chapeau", "Hut"), "island": ("isla", "île", "Insel"), "forest": ("bosque", "forêt", "Wald"),
    "sister": ("hermana", None, "Schwester"), "son": ("hijo", "fils", "Sohn"), "queen": ("reina", "reine", "Königin"),
    "pig": ("cerdo", "cochon", "Schwein"), "sheep": ("oveja", "mouton", "Schaf"), "mouse": ("ratón", "souris", "Maus"),
    "eight": ("ocho", "huit", "acht"), "ten": ("diez", "dix", "zehn"), "bridge": ("puente", "pont", "Brücke"),
    "boat": ("barco", "bateau", "Boot"), "ear": ("oreja", "oreille", "Ohr"), "nose": ("nariz", "nez", "Nase"),
    "lemon": ("limón", "citron", "Zitrone"), "frog": ("rana", "grenouille", "Frosch"), "bear": ("oso", "ours", "Bär"),
}  # fmt: skip
TRANSLATION_ALSO = {"sombrero": ["gorro"], "barco": ["bote"], "cerdo": ["puerco", "cochino"], "cochon": ["porc"],
                    "clé": ["clef"], "Huhn": ["Hähnchen", "Hühnchen"], "bosque": ["selva"], "Brücke": ["Bruecke"],
                    "Schlüssel": ["Schluessel"], "Löffel": ["Loeffel"], "Käse": ["Kaese"], "Bär": ["Baer"]}  # fmt: skip

YES = [
    "Is the Amazon a river in South America?", "Do fish live in water?", "Is Paris in France?", "Is silver a metal?",
    "Do spiders have eight legs?", "Is Saturn a planet?", "Do humans need water to live?", "Is a lion a mammal?",
    "Is an hour longer than a minute?", "Is Canada in North America?", "Is the sky blue on a clear day?",
    "Is chess a board game?", "Does an octopus have eight arms?", "Is French spoken in France?",
    "Is twenty more than fifteen?", "Can eagles fly?", "Is the Mediterranean a sea?", "Is three an odd number?",
    "Do trees have roots?", "Is Antarctica cold?", "Is a piano a musical instrument?", "Is Rome in Italy?",
    "Does the Moon orbit the Earth?", "Is salt used in cooking?", "Is a year longer than a month?",
]  # fmt: skip
NO = [
    "Do snakes have legs?", "Is Paris in Spain?", "Is silver a liquid at room temperature?",
    "Do spiders have six legs?", "Is Saturn a star?", "Is coal white?", "Is a minute longer than an hour?",
    "Is Canada in South America?", "Is grass usually purple?", "Is four an odd number?", "Can elephants fly?",
    "Is a shark a mammal?", "Do horses have wings?", "Is the Moon bigger than the Sun?", "Is nine less than four?",
    "Is Berlin in Italy?", "Is an ant bigger than an elephant?", "Is a ripe banana blue?", "Is ice hot?",
    "Does a bicycle have five wheels?", "Is the Pacific a desert?", "Do dogs lay eggs?", "Is Africa a country?",
    "Is the Earth the largest planet in the solar system?", "Is summer usually colder than winter?",
]  # fmt: skip
LIST_TOPICS = [
    "desserts", "school subjects", "drinks", "shapes", "items of clothing", "parts of the body",
    "things in a bathroom", "vehicles", "gemstones", "spices", "garden tools", "dances", "kinds of bread",
    "reptiles", "snacks", "months of the year", "toys", "car brands", "hobbies", "cheeses",
]  # fmt: skip
ASKED = {  # none of them the check's or `checkable`'s phrasings
    "capital": ["Tell me the capital of {}.", "What's the capital city of {}?", "Do you know the capital of {}?",
                "Which city serves as the capital of {}?"],
    "arithmetic": ["How much is {a} {word} {b}?", "Work out {a} {op} {b}.", "Please compute {a} {word} {b}.",
                   "{a} {word} {b} equals what?"],
    "list": ["Can you list {} {}?", "Tell me {} {}.", "Write down {} {}.", "What are {} {}?"],
    "translation": ["What's the {1} for '{0}'?", "Give me the {1} word for '{0}'.",
                    "In {1}, how would you say '{0}'?", "Translate the word '{0}' to {1}."],
}  # fmt: skip


def _arithmetic(rng: random.Random) -> tuple[int, str, int]:
    """Operands outside `checkable`'s ranges (+/-: 10-60 and 2-40; x: 2-12), so no round drew this sum."""
    op = rng.choice(["+", "-", "*"])
    a, b = (
        (rng.randint(13, 19), rng.randint(2, 5)) if op == "*" else (rng.randint(61, 99), rng.randint(2, 40))
    )
    return a, op, b


def items(seed: int = SEED, per_kind: int = 50) -> list[Item]:
    """`per_kind` items of each kind (at most a table's size), same seed → same items; ids start 'second-'."""
    rng, out = random.Random(seed), []
    for c in rng.sample(sorted(CAPITALS), min(per_kind, len(CAPITALS))):
        q = rng.choice(ASKED["capital"]).format(c)
        out.append(
            Item(f"second-capital-{c}", "capital", q, CAPITALS[c], ("capital", *instructions._words(c)))
        )
    seen: set[tuple] = set()
    while len(seen) < per_kind:
        a, op, b = _arithmetic(rng)
        if (a, op, b) in seen:
            continue
        seen.add((a, op, b))
        result = a + b if op == "+" else a - b if op == "-" else a * b
        word = {"+": "plus", "-": "minus", "*": "times"}[op]
        q = rng.choice(ASKED["arithmetic"]).format(a=a, b=b, word=word, op=op.replace("*", "×"))
        out.append(Item(f"second-arithmetic-{a}{op}{b}", "arithmetic", q, str(result), (str(a), str(b))))
    for k, topic in enumerate(rng.sample(LIST_TOPICS * 3, min(per_kind, 3 * len(LIST_TOPICS)))):
        n = rng.choice([3, 4, 5])
        q = rng.choice(ASKED["list"]).format(instructions.NUMBER_WORDS[n], topic)
        out.append(
            Item(
                f"second-list-{k}",
                "list",
                q,
                str(n),
                (instructions.NUMBER_WORDS[n], *instructions._words(topic)),
            )
        )
    langs = instructions.LANGUAGES
    pairs = [(w, lang) for w, ts in TRANSLATIONS.items() for lang, t in zip(langs, ts) if t]
    for w, lang in rng.sample(sorted(pairs), min(per_kind, len(pairs))):
        q = rng.choice(ASKED["translation"]).format(w, lang)
        out.append(
            Item(f"second-translate-{w}-{lang}", "translation", q, TRANSLATIONS[w][langs.index(lang)], (w,))
        )
    facts = [(q, "yes") for q in YES] + [(q, "no") for q in NO]
    for q, a in rng.sample(facts, min(per_kind, len(facts))):
        out.append(Item(f"second-yesno-{instructions.norm(q)[:40]}", "yes/no", q, a, ()))
    return out


def judge(item: Item, reply: str) -> bool:
    """The check's judges, over this set's cities and spellings."""
    if item.kind == "capital":
        return instructions.judge_capital(item, reply, CITIES, ALSO)
    if item.kind == "translation":
        return instructions.judge_translation(item, reply, TRANSLATION_ALSO)
    return instructions.judge(item, reply)
