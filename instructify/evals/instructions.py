"""The instruction check: simple instructions whose answers a program can judge, from a seeded generator.

Conformance says whether a model stops; this says whether it answers. Five kinds: capital cities, small arithmetic,
"list N things" (the count is judged), one-word translations from a small table, and yes/no facts. The tables are
ours and fixed, the generator is seeded, and `synth` drops any generated prompt that touches an item here
(`touches`), so no answer is in the training data. Judges are strict and simple, so a score is what it says:
the first capital named must be the right one, the first number that is not an operand must be the result, a
list must have exactly N distinct items, the translation must appear as a word, the first yes/no must match.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

FILE = "instructions.json"

CAPITALS = {
    "France": "Paris", "Italy": "Rome", "Germany": "Berlin", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo", "Canada": "Ottawa",
    "Australia": "Canberra", "Brazil": "Brasilia", "Argentina": "Buenos Aires", "Mexico": "Mexico City",
    "India": "New Delhi", "Kenya": "Nairobi", "Greece": "Athens", "Norway": "Oslo", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Denmark": "Copenhagen", "Poland": "Warsaw", "Austria": "Vienna", "Ireland": "Dublin",
    "Belgium": "Brussels", "the Netherlands": "Amsterdam", "Hungary": "Budapest", "the Czech Republic": "Prague",
    "Turkey": "Ankara", "Iran": "Tehran", "Iraq": "Baghdad", "Thailand": "Bangkok", "Vietnam": "Hanoi",
    "South Korea": "Seoul", "Indonesia": "Jakarta", "the Philippines": "Manila", "Peru": "Lima",
    "Chile": "Santiago", "Colombia": "Bogota", "Cuba": "Havana", "Nigeria": "Abuja", "Ethiopia": "Addis Ababa",
    "Morocco": "Rabat", "Saudi Arabia": "Riyadh", "Pakistan": "Islamabad", "Ukraine": "Kyiv",
    "Romania": "Bucharest", "Switzerland": "Bern", "New Zealand": "Wellington", "the United Kingdom": "London",
}  # fmt: skip
ALSO = {"New Delhi": ["Delhi"], "Kyiv": ["Kiev"], "Bern": ["Berne"]}
# Cities a wrong answer often names first: with the capitals, what "the first city named" is looked for among.
DISTRACTORS = [
    "Sydney", "Melbourne", "Toronto", "Montreal", "Vancouver", "Istanbul", "Rio de Janeiro", "Sao Paulo",
    "Shanghai", "Hong Kong", "Mumbai", "Lagos", "Zurich", "Geneva", "Auckland", "New York", "Washington",
    "Los Angeles", "Barcelona", "Milan", "Munich", "Frankfurt", "Osaka", "Kyoto", "Saint Petersburg",
    "Casablanca", "Alexandria", "Ho Chi Minh City", "Krakow", "Porto", "Rotterdam", "Antwerp", "Johannesburg",
    "Cape Town", "Karachi", "Lahore", "Dubai", "Manchester", "Edinburgh", "Valparaiso", "Medellin", "Busan",
]  # fmt: skip

TRANSLATIONS = {  # English word: (Spanish, French, German); None where the word is also English ("pain")
    "water": ("agua", "eau", "Wasser"), "dog": ("perro", "chien", "Hund"), "cat": ("gato", "chat", "Katze"),
    "house": ("casa", "maison", "Haus"), "book": ("libro", "livre", "Buch"), "sun": ("sol", "soleil", "Sonne"),
    "moon": ("luna", "lune", "Mond"), "red": ("rojo", "rouge", "rot"), "blue": ("azul", "bleu", "blau"),
    "green": ("verde", "vert", "grün"), "bread": ("pan", None, "Brot"), "milk": ("leche", "lait", "Milch"),
    "apple": ("manzana", "pomme", "Apfel"), "friend": ("amigo", "ami", "Freund"),
    "school": ("escuela", "école", "Schule"), "tree": ("árbol", "arbre", "Baum"),
    "city": ("ciudad", "ville", "Stadt"), "night": ("noche", "nuit", "Nacht"), "day": ("día", "jour", "Tag"),
    "thank you": ("gracias", "merci", "danke"), "hello": ("hola", "bonjour", "hallo"),
    "two": ("dos", "deux", "zwei"), "three": ("tres", "trois", "drei"), "woman": ("mujer", "femme", "Frau"),
    "window": ("ventana", "fenêtre", "Fenster"), "door": ("puerta", "porte", "Tür"),
    "fish": ("pescado", "poisson", "Fisch"), "flower": ("flor", "fleur", "Blume"),
    "chair": ("silla", "chaise", None), "summer": ("verano", "été", "Sommer"),
}  # fmt: skip
LANGUAGES = ("Spanish", "French", "German")
TRANSLATION_ALSO = {"pescado": ["pez"], "grün": ["gruen"], "Tür": ["tuer"], "danke": ["danke schön"]}

YES = [
    "Is the Pacific the largest ocean on Earth?", "Is ice frozen water?", "Is a whale a mammal?",
    "Does the Earth orbit the Sun?", "Is seven a prime number?", "Is the Moon smaller than the Earth?",
    "Do plants need light to grow?", "Is gold a metal?", "Is Mount Everest in Asia?",
    "Does a triangle have three sides?", "Is English spoken in Australia?", "Does a week have seven days?",
    "Is the heart an organ?", "Do bees make honey?", "Is oxygen a gas at room temperature?",
    "Is the Nile a river?", "Can penguins swim?", "Is twelve greater than nine?", "Do cows eat grass?",
    "Is Jupiter a planet?", "Is the Sun a star?", "Does water boil at 100 degrees Celsius at sea level?",
    "Is a kilometre longer than a metre?", "Do birds have feathers?", "Is Spanish spoken in Mexico?",
]  # fmt: skip
NO = [
    "Is the Sun a planet?", "Is the Moon made of cheese?", "Is a spider an insect?", "Is ten a prime number?",
    "Does a year have ten months?", "Is the Sahara in South America?", "Is a dolphin a fish?",
    "Is iron a gas at room temperature?", "Is London in Germany?", "Do penguins live at the North Pole?",
    "Is the Atlantic Ocean larger than the Pacific Ocean?", "Is five greater than eight?", "Is a bat a bird?",
    "Does the Sun orbit the Earth?", "Does a square have five sides?", "Do cats lay eggs?",
    "Is Mars the closest planet to the Sun?", "Is Tokyo in China?", "Is winter the hottest season?",
    "Is the Earth flat?", "Are there thirty hours in a day?", "Is a carrot a fruit?", "Can humans breathe underwater without equipment?",
    "Is a metre longer than a kilometre?", "Is snow hot?",
]  # fmt: skip

LIST_TOPICS = [
    "fruits", "vegetables", "colors", "animals", "countries in Europe", "musical instruments", "sports",
    "planets in the solar system", "kitchen utensils", "types of trees", "birds", "programming languages",
    "flowers", "sea animals", "metals", "board games", "things you can find in a classroom", "farm animals",
    "languages spoken in Europe", "pieces of furniture",
]  # fmt: skip
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}


@dataclass(frozen=True)
class Item:
    id: str
    kind: str
    prompt: str
    answer: str  # what the judge looks for, for reading the samples
    key: tuple[str, ...]  # words a training prompt must not contain all of (`touches`)


def norm(text: str) -> str:
    """Lower case, accents off: 'Brasília' == 'brasilia', 'École' == 'ecole'."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", norm(text)))


def items(seed: int = 0, per_kind: int = 50) -> list[Item]:
    """`per_kind` items of each kind (capitals and yes/no at most their table's size), same seed → same items."""
    rng = random.Random(seed)
    out: list[Item] = []
    countries = sorted(CAPITALS)
    for c in rng.sample(countries, min(per_kind, len(countries))):
        q = rng.choice(
            ["What is the capital of {}?", "Which city is the capital of {}?", "Name the capital city of {}."]
        )
        out.append(Item(f"capital-{c}", "capital", q.format(c), CAPITALS[c], ("capital", *_words(c))))
    seen = set()
    while len([i for i in out if i.kind == "arithmetic"]) < per_kind:
        op = rng.choice(["+", "-", "*"])
        a, b = (
            (rng.randint(2, 12), rng.randint(2, 12))
            if op == "*"
            else (rng.randint(10, 60), rng.randint(2, 40))
        )
        a, b = (a, b) if op != "-" or a > b else (b, a)
        result = a + b if op == "+" else a - b if op == "-" else a * b
        if result in (a, b) or a == b or (a, b, op) in seen:
            continue
        seen.add((a, b, op))
        word = {"+": "plus", "-": "minus", "*": "times"}[op]
        q = rng.choice([f"What is {a} {word} {b}?", f"What is {a} {op} {b}?", f"Calculate {a} {word} {b}."])
        out.append(
            Item(f"arithmetic-{a}{op}{b}", "arithmetic", q.replace("*", "×"), str(result), (str(a), str(b)))
        )
    for k, topic in enumerate(rng.sample(LIST_TOPICS * 3, per_kind)):
        n = rng.choice([3, 4, 5])
        q = rng.choice(["List {} {}.", "Name {} {}.", "Give me {} {}."]).format(NUMBER_WORDS[n], topic)
        out.append(Item(f"list-{k}", "list", q, str(n), (NUMBER_WORDS[n], *_words(topic))))
    pairs = [(w, lang) for w, ts in TRANSLATIONS.items() for lang, t in zip(LANGUAGES, ts) if t]
    for w, lang in rng.sample(sorted(pairs), min(per_kind, len(pairs))):
        target = TRANSLATIONS[w][LANGUAGES.index(lang)]
        q = rng.choice(
            ["Translate '{}' into {}.", "How do you say '{}' in {}?", "What is the {1} word for '{0}'?"]
        )
        out.append(
            Item(f"translate-{w}-{lang}", "translation", q.format(w, lang), target, (*_words(w), norm(lang)))
        )
    facts = [(q, "yes") for q in YES] + [(q, "no") for q in NO]
    for q, a in rng.sample(facts, min(per_kind, len(facts))):
        out.append(Item(f"yesno-{norm(q)[:40]}", "yes/no", q, a, tuple(sorted(_words(q)))))
    return out


def apart(per_kind: int, check_per_kind: int, seed: int = 1) -> list[Item]:
    """Up to `per_kind` items of each kind, none of them in the check of `check_per_kind` items per kind: for
    choosing between checkpoints without looking at the check (a kind whose table the check uses up has fewer).
    None for `per_kind` 0."""
    if per_kind <= 0:
        return []

    # a list item's id is its position, so it is told apart by its topic and count
    def what(i: Item) -> tuple:
        return (i.key, i.answer) if i.kind == "list" else (i.id,)

    taken = {what(i) for i in items(per_kind=check_per_kind)}
    out: list[Item] = []
    # enough candidates that the check's share of them still leaves `per_kind` (lists draw from their topics x 3)
    for item in items(seed, per_kind=min(max(2 * per_kind, check_per_kind), len(LIST_TOPICS) * 3)):
        if what(item) not in taken and sum(i.kind == item.kind for i in out) < per_kind:
            out.append(item)
    return out


# --- judges: (item, reply) -> correct -----------------------------------------------------------------------


CITIES = [*CAPITALS.values(), *[a for v in ALSO.values() for a in v], *DISTRACTORS]


def first_city(reply: str, cities: list[str] = CITIES) -> str | None:
    """The first of `cities` the reply names."""
    text = norm(reply)
    found = []
    for city in cities:
        m = re.search(rf"\b{re.escape(norm(city))}\b", text)
        if m:
            found.append((m.start(), -len(city), city))  # "New Delhi" before "Delhi" at one position
    return min(found)[2] if found else None


def judge_capital(
    item: Item, reply: str, cities: list[str] = CITIES, also: dict[str, list[str]] = ALSO
) -> bool:
    city = first_city(reply, cities)
    return city is not None and (city == item.answer or city in also.get(item.answer, []))


def judge_arithmetic(item: Item, reply: str) -> bool:
    numbers = [n.replace(",", "") for n in re.findall(r"-?\d[\d,]*(?:\.\d+)?", reply)]
    for operand in item.key:  # "12 times 7 is 84": the operands restated are not the answer
        if operand in numbers:
            numbers.remove(operand)
    return bool(numbers) and numbers[0].rstrip(".") in (item.answer, item.answer + ".0")


BULLET = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+(\S.*)$")


def list_items(reply: str) -> list[str]:
    """The items of a list reply: bulleted or numbered lines when there are two or more, else the first
    sentence's comma/and-separated parts (after a 'Here are three:' lead-in)."""
    bulleted = [m.group(1) for line in reply.splitlines() if (m := BULLET.match(line))]
    if len(bulleted) >= 2:
        return [norm(b).strip(" .") for b in bulleted]
    text = reply.split(":", 1)[1] if ":" in reply.split(".")[0] else reply
    first = re.split(r"(?<=[a-z])\.(?:\s|$)|\n", text.strip(), maxsplit=1)[0]
    parts = [p.strip(" .") for p in re.split(r",|;|\band\b|\bor\b", norm(first))]
    return [p for p in parts if p and len(p.split()) <= 5]


def judge_list(item: Item, reply: str) -> bool:
    found = list_items(reply)
    return len(found) == int(item.answer) and len(set(found)) == len(found)


def judge_translation(item: Item, reply: str, also: dict[str, list[str]] = TRANSLATION_ALSO) -> bool:
    text = norm(reply)
    return any(
        re.search(rf"\b{re.escape(norm(t))}\b", text) for t in [item.answer, *also.get(item.answer, [])]
    )


def judge_yesno(item: Item, reply: str) -> bool:
    m = re.search(r"\b(yes|no)\b", norm(reply))
    return bool(m) and m.group(1) == item.answer


JUDGES: dict[str, Callable[[Item, str], bool]] = {
    "capital": judge_capital,
    "arithmetic": judge_arithmetic,
    "list": judge_list,
    "translation": judge_translation,
    "yes/no": judge_yesno,
}


def judge(item: Item, reply: str) -> bool:
    return JUDGES[item.kind](item, reply)


def touches(prompt: str, checks: list[Item]) -> Item | None:
    """The check item a training prompt would give away: one whose key words it contains all of
    ('capital' + 'France'; '12' + '7'; 'three' + 'fruits'; 'dog' + 'Spanish'; a yes/no question's words)."""
    words = _words(prompt)
    return next((i for i in checks if set(i.key) <= words), None)


def score(
    checks: list[Item], replies: list[str], stopped: list[bool], judged: Callable[[Item, str], bool] = judge
) -> dict:
    """Correct share overall and by kind, with 95% intervals; `stopped_correct` also needs the reply to end.
    `judged`: the judge of the set the items come from (instructify/evals/second_set.py has its own)."""
    from instructify.evals.conformance import wilson

    correct = [judged(i, r) for i, r in zip(checks, replies)]
    by_kind = {}
    for kind in JUDGES:
        ks = [c for i, c in zip(checks, correct) if i.kind == kind]
        by_kind[kind] = {"n": len(ks), "correct": sum(ks), "score": sum(ks) / max(len(ks), 1)}
    k, n = sum(correct), len(checks)
    return {
        "n": n,
        "correct": k,
        "score": k / max(n, 1),
        "score_ci95": wilson(k, n),
        "stopped_correct": sum(c and s for c, s in zip(correct, stopped)) / max(n, 1),
        "by_kind": by_kind,
        "replies": [
            {"id": i.id, "prompt": i.prompt, "answer": i.answer, "reply": r, "correct": c}
            for i, r, c in zip(checks, replies, correct)
        ],
    }


def answer(
    model,
    tokenizer,
    checks: list[Item],
    max_new_tokens: int,
    batch_size: int,
    preamble: str | None = None,
    sampling: dict | None = None,
) -> tuple[list[str], list[bool]]:
    """Replies to the check (greedy unless `sampling`): through the model's chat template, or under the in-context
    `preamble` (a base model, instructify/chat/incontext.py). Returns the texts and whether each ended by itself."""
    from instructify.chat import incontext
    from instructify.evals import conformance, generation

    if preamble is not None:
        texts = [incontext.render([{"role": "user", "content": i.prompt}]) for i in checks]
        done = generation.complete(
            model, tokenizer, texts, incontext.FENCE, max_new_tokens, batch_size, sampling, prefix=preamble
        )
        return [t.strip() for t, _ in done], [s for _, s in done]
    prompts = [
        {"id": i.id, "prior_turns": 1, "messages": [{"role": "user", "content": i.prompt}]} for i in checks
    ]
    replies = conformance.generate(model, tokenizer, prompts, max_new_tokens, batch_size, sampling)
    return [r.text for r in replies], [r.stopped for r in replies]


def read(out_dir, file: str = FILE) -> dict:
    """<out_dir>/instructions.json (or a second set's `file`): one entry per checked model; empty before the
    first check."""
    from pathlib import Path

    path = Path(out_dir) / file
    return json.loads(path.read_text()) if path.is_file() else {}


def write(out_dir, name: str, result: dict, file: str = FILE) -> None:
    from pathlib import Path

    entries = read(out_dir, file)
    entries[name] = result
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / file).write_text(json.dumps(entries, indent=1, ensure_ascii=False) + "\n")
