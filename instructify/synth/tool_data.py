"""Tool-calling conversations written by program, offline: `python -m instructify.synth.tool_data --out data/tools`.

Rows in OpenAI's shape (`tools`, assistant `tool_calls` with dict arguments, `tool` results) over the function
library of instructify/synth/functions.py, of six kinds: single (one tool, one call), choose (2-5 tools, one
fits), parallel (2-3 calls in one message), no_tool (nothing offered fits, or chit-chat: a text answer), missing
(a required value is not in the request: the assistant asks for it by name) and two_step (a call, the fake
function's result, an answer quoting it). An optional argument is in a call only when the request says it.

Every row is checked by program before it is written (row_problem): calls name an offered function, arguments
meet its schema, every argument value is found in the request text, the calls are the ones the row was built
for, each result answers its call. Rejects are counted by reason in the provenance. `heldout.jsonl` uses only
the functions of functions.HELD_OUT (never in train) and its own connectives, chit-chat and system messages, so it
measures calls to unseen functions.

Our own code: the Hub's tool-calling sets need the Hub and a model wrote them; these need neither, and each value
in a call can be traced to the request.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import logging
import random
import re
import time
from collections import Counter
from pathlib import Path

from instructify.chat import tools as chat_tools
from instructify.synth import functions
from instructify.synth.functions import TOOLS, Tool

log = logging.getLogger(__name__)

KINDS = ("single", "choose", "parallel", "no_tool", "missing", "two_step")
# Rows per kind. Train: 40% answer in text first (no tool fits, a value is missing): at 25% the configs/tools.yaml
# model called a tool whatever was asked (held-out no_tool and missing rows right 0/23, BFCL irrelevance 2.5%).
# Held out: the first file's shares, so its rows (and the tool check's figures) stay comparable.
SHARES = {
    "train": {"single": 0.12, "choose": 0.20, "parallel": 0.12, "no_tool": 0.28, "missing": 0.12, "two_step": 0.16},
    "heldout": {"single": 0.15, "choose": 0.25, "parallel": 0.15, "no_tool": 0.15, "missing": 0.10, "two_step": 0.20},
}  # fmt: skip
SYSTEM_SHARE = 0.25
CHAT_SHARE = 0.3  # of the no_tool rows, while the split's chit-chat prompts last
OPTIONAL_SHARE = 0.5  # chance that a request says each optional `[...]` segment
CHOOSE_TOOLS = {2: 0.35, 3: 0.35, 4: 0.2, 5: 0.1}  # tools offered in a choose row
SIBLING_SHARE = 0.5  # choose rows whose distractors come first from the same domain (descriptions overlap)
TRIES = 50  # candidates per row before the row is given up
# Train rows whose functions and parameters are renamed to meaningless names, descriptions kept ("function
# masking", as Hammer does): with 69 functions the recipe-3 model wrote the names it had memorised ("months" for
# `years`, "free_slot" for `first_free_slot`) on unseen functions, where it must read the schema.
MASK_SHARE = 0.5
MASK_PARAM = 0.7  # chance that each parameter of a masked row's function is renamed
MASK_WORDS = ("amber", "birch", "cobalt", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "jasper",
              "kestrel", "lumen", "maple", "nimbus", "onyx", "pebble", "quartz", "raven", "sable", "tundra",
              "umber", "vertex", "willow", "yarrow", "zephyr")  # fmt: skip

SYSTEMS = {
    "train": [
        "You are a helpful assistant.",
        "You are a helpful assistant with access to tools. Use them when they help.",
        "You are a concise assistant. Call a tool when the request needs one; otherwise answer briefly.",
        "You are a friendly assistant on a phone.",
        "Only call the tools listed, with the values the user gave.",
    ],
    "heldout": [
        "You are an assistant that can call functions. Ask when something required is missing.",
        "You are a helpful, brief assistant.",
    ],
}
JOINERS = {  # how a parallel request strings its parts together
    "train": {
        2: ["{0} {1}", "{0} Also, one more thing: {1}", "Two things. First: {0} Second: {1}", "{0}\n{1}"],
        3: ["{0} {1} {2}", "Three things. 1) {0} 2) {1} 3) {2}", "{0}\n{1}\n{2}"],
    },
    "heldout": {
        2: ["A couple of requests: {0} And then: {1}", "(1) {0} (2) {1}"],
        3: ["A few requests: {0} Then: {1} Finally: {2}", "(1) {0} (2) {1} (3) {2}"],
    },
}
# (prompt, answer, domain whose tools it must not be offered with, or None)
CHAT = {
    "train": [
        ("Hi there!", "Hello! How can I help you today?", None),
        ("Thanks, that's all.", "You're welcome! Have a great day.", None),
        ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet.", "books"),
        ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system.", None),
        ("How many continents are there?", "There are seven continents.", None),
        ("What's the chemical symbol for gold?", "The chemical symbol for gold is Au.", None),
        ("Can you tell me a joke?", "Why don't scientists trust atoms? Because they make up everything.", None),
        ("What do bees make?", "Bees make honey, and beeswax too.", None),
        ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa.", None),
        ("How many legs does a spider have?", "A spider has eight legs.", None),
        ("Give me a tip for sleeping better.", "Keep a regular schedule: go to bed and get up at the same time every day, weekends included.", None),
        ("What is photosynthesis?", "Photosynthesis is how plants use sunlight, water and carbon dioxide to make sugar, releasing oxygen.", None),
        ("Which ocean is the largest?", "The Pacific Ocean is the largest.", None),
        ("What colour do you get by mixing blue and yellow?", "Mixing blue and yellow gives green.", None),
        ("How are you today?", "I'm doing well, thanks for asking! What can I do for you?", None),
        ("What's your name?", "I'm an AI assistant. How can I help?", None),
        ("Suggest a name for a pet goldfish.", "How about Bubbles? Or Captain Fin, if you'd like something grander.", None),
        ("Who was the first person to walk on the Moon?", "Neil Armstrong, in 1969.", None),
        ("What's the tallest mountain on Earth?", "Mount Everest, about 8,849 metres above sea level.", None),
        ("Write a haiku about autumn.", "Crisp leaves drift and fall\nthe maple lets go of red\ncold wind hums goodbye", None),
        ("What is the capital of Canada?", "The capital of Canada is Ottawa.", None),
        ("Good night!", "Good night! Sleep well.", None),
        ("What gas do we breathe out?", "We breathe out carbon dioxide, along with the nitrogen and oxygen we don't use.", None),
        ("What's the difference between weather and climate?", "Weather is what the atmosphere does day to day; climate is the average pattern over many years.", "weather"),
        ("Tell me something interesting.", "Octopuses have three hearts and blue blood.", None),
        ("Is a tomato a fruit or a vegetable?", "Botanically a tomato is a fruit, but it's usually cooked and eaten as a vegetable.", None),
        ("What language do people speak in Brazil?", "Portuguese is the main language of Brazil.", "translation"),
        ("I'm bored. Any ideas?", "You could take a short walk, try a new recipe, call a friend or start a book you've been meaning to read.", None),
        ("Who discovered penicillin?", "Alexander Fleming discovered penicillin in 1928.", None),
        ("What's the speed of light?", "About 299,792 kilometres per second in a vacuum.", None),
        ("Explain what a noun is.", "A noun is a word that names a person, place, thing or idea, like 'teacher', 'city' or 'happiness'.", "text"),
        ("Thank you!", "You're welcome!", None),
        ("Which planet is known as the Red Planet?", "Mars is known as the Red Planet.", None),
        ("What do you call a baby kangaroo?", "A baby kangaroo is called a joey.", None),
        ("Give me a word that rhymes with 'cat'.", "'Hat' rhymes with 'cat'.", "text"),
        ("How many strings does a standard guitar have?", "A standard guitar has six strings.", "music"),
        ("What's the main ingredient in hummus?", "Chickpeas, blended with tahini, lemon juice and garlic.", "recipes"),
        ("Can you keep a secret?", "I don't remember anything between conversations, so your secret is safe with me.", None),
        ("What does a thermometer measure?", "A thermometer measures temperature.", None),
        ("Why is the sky blue?", "Air scatters blue sunlight more than red, so blue light reaches our eyes from all over the sky.", None),
    ],
    "heldout": [
        ("Hello, anyone there?", "Yes, I'm here! What can I do for you?", None),
        ("Who wrote Pride and Prejudice?", "Jane Austen wrote Pride and Prejudice.", "books"),
        ("What is the smallest prime number?", "The smallest prime number is 2.", "math"),
        ("How many bones are in the adult human body?", "An adult human has 206 bones.", None),
        ("Which is the largest mammal?", "The blue whale is the largest mammal.", None),
        ("Appreciate the help!", "Any time! Glad I could help.", None),
        ("What does DNA stand for?", "DNA stands for deoxyribonucleic acid.", None),
        ("Say something nice.", "You're doing great, and asking questions is how everyone learns.", None),
        ("How many keys does a piano have?", "A standard piano has 88 keys.", "music"),
        ("What's the freezing point of water?", "Water freezes at 0 °C, or 32 °F.", "units"),
    ],
}  # fmt: skip
NO_FIT = [  # {need}: what the request wants, {offer}: what an offered tool does, both from descriptions
    "I can't {need} with the tools I have here. I can {offer}, if that helps.",
    "Sorry, none of my tools can {need}. I can {offer}, though.",
    "That isn't something my tools cover: there's nothing here to {need}. What I can do is {offer}.",
    "I don't have a tool to {need}, so I can't do that one. I could {offer} instead.",
    "I'm not able to {need} with the tools available, so I can't answer that one.",
]
# Knowledge questions on a domain's subject that none of its tools answers (they act or look up live data): the
# row offers 1-2 tools of that very domain and answers in text. Why: the "no tool fits" rows above never offer a
# tool related to the request, so recipe 4's model learnt "a tool on the topic: call it" (BFCL irrelevance 40%).
TOPIC = {
    "calendar": [
        ("How many days are there in a leap year?", "A leap year has 366 days."),
        ("Why does February sometimes have 29 days?", "Because a year is about 365.25 days long: adding a day every fourth year keeps the calendar in step with the seasons."),
        ("Which calendar do most countries use today?", "Most countries use the Gregorian calendar."),
        ("What is a fortnight?", "A fortnight is two weeks, or fourteen days."),
    ],
    "currency": [
        ("What currency do people use in Japan?", "Japan uses the yen."),
        ("What is inflation?", "Inflation is a general rise in prices over time, so the same money buys less."),
        ("Which countries use the euro?", "Twenty EU countries use the euro, among them France, Germany, Italy and Spain."),
        ("What does a central bank do?", "A central bank issues a country's money, sets interest rates and supervises the banks."),
    ],
    "email": [
        ("Who sent the first email?", "Ray Tomlinson sent the first network email, in 1971."),
        ("What does CC mean in an email?", "CC stands for carbon copy: those people get a copy of the message."),
        ("What is spam?", "Spam is unwanted email sent in bulk, often advertising or scams."),
        ("Why does an email address have an @ sign?", "The @ separates the user's name from the domain of the mail server."),
    ],
    "files": [
        ("What does PDF stand for?", "PDF stands for Portable Document Format."),
        ("What's the difference between a file and a folder?", "A file holds data, like a document or a photo; a folder holds files and other folders."),
        ("How many bytes are in a kilobyte?", "A kilobyte is 1,000 bytes, or 1,024 in the older binary sense."),
        ("Why do people zip files?", "Zipping packs files into one archive and compresses them, so they take less space and are easier to send."),
    ],
    "finance": [
        ("What is compound interest?", "Compound interest is interest earned on both the money you put in and the interest it has already earned."),
        ("What is a stock?", "A stock is a share of ownership in a company."),
        ("What does a mortgage mean?", "A mortgage is a loan to buy property, with the property as security."),
        ("Why should I keep an emergency fund?", "It covers surprises such as a job loss or a repair without going into debt; a few months of expenses is a common aim."),
    ],
    "fitness": [
        ("Why is stretching good for you?", "Stretching keeps muscles flexible and joints moving through their full range."),
        ("What muscles do squats work?", "Squats work mainly the thighs and glutes, and the core too."),
        ("How much water should an adult drink a day?", "Around two litres a day is a common guide, more when it is hot or you exercise."),
        ("What is the difference between aerobic and anaerobic exercise?", "Aerobic exercise, like jogging, uses oxygen over a long time; anaerobic, like sprinting, is short bursts without enough oxygen."),
    ],
    "maps": [
        ("What is the longest river in the world?", "The Nile and the Amazon are both about 6,500 km long; the Nile is usually named the longest."),
        ("What is the equator?", "The equator is the imaginary line around the Earth halfway between the poles."),
        ("Which is the largest country by area?", "Russia is the largest country by area."),
        ("What does a compass point to?", "A compass needle points to magnetic north."),
    ],
    "math": [
        ("Who proved Fermat's Last Theorem?", "Andrew Wiles proved it, in 1994."),
        ("What is a prime number?", "A prime number is a whole number above 1 whose only divisors are 1 and itself."),
        ("Why can't you divide by zero?", "No number times zero gives a non-zero number, so division by zero has no answer."),
        ("What does the Pythagorean theorem say?", "In a right triangle, the square of the longest side equals the sum of the squares of the other two."),
    ],
    "messaging": [
        ("What does SMS stand for?", "SMS stands for Short Message Service."),
        ("Who invented the telephone?", "Alexander Graham Bell is credited with inventing the telephone, in 1876."),
        ("What does 'brb' mean in a chat?", "'brb' means 'be right back'."),
        ("Is it rude to text in all capital letters?", "Often, yes: all capitals reads as shouting."),
    ],
    "movies": [
        ("Who directed Jurassic Park?", "Steven Spielberg directed Jurassic Park."),
        ("What was the first feature-length animated film?", "Disney's Snow White and the Seven Dwarfs, from 1937, is usually named the first."),
        ("What is a sequel?", "A sequel is a film or book that continues the story of an earlier one."),
        ("Why do cinemas sell popcorn?", "It is cheap to make, easy to eat in the dark, and very profitable."),
    ],
    "music": [
        ("How many notes are in an octave?", "An octave spans eight notes of a scale, or twelve semitones."),
        ("Who composed the Moonlight Sonata?", "Ludwig van Beethoven composed the Moonlight Sonata."),
        ("What is a tempo?", "Tempo is the speed of a piece of music, often given in beats per minute."),
        ("What instrument has 88 keys?", "A standard piano has 88 keys."),
    ],
    "news": [
        ("What is a journalist?", "A journalist gathers, checks and reports news."),
        ("What does 'breaking news' mean?", "Breaking news is a story that is happening now and is reported as it unfolds."),
        ("How can I tell if a news story is fake?", "Check the source, look for the same story from other outlets, and be wary of headlines built to make you angry."),
        ("When was the first newspaper printed?", "The first printed newspaper is usually dated to Strasbourg in 1605."),
    ],
    "recipes": [
        ("Why does bread rise?", "Yeast feeds on sugars and gives off carbon dioxide, which the dough traps as bubbles."),
        ("What is the difference between baking soda and baking powder?", "Baking soda needs an acid to react; baking powder already contains one."),
        ("Where does pizza come from?", "Modern pizza comes from Naples, in Italy."),
        ("Why do onions make you cry?", "Cutting an onion releases a gas that irritates the eyes, so they make tears to wash it away."),
    ],
    "reminders": [
        ("Why do I forget things I meant to do?", "Intentions fade when nothing cues them; writing a task down or tying it to a routine helps."),
        ("What is the Pomodoro technique?", "You work for 25 minutes, take a 5-minute break, and repeat, with a longer break every four rounds."),
        ("How long does it take to form a habit?", "It varies a lot; one study found an average of about two months."),
        ("Is it better to make a to-do list in the morning or the night before?", "Either works; the night before lets you start the day knowing what comes first."),
    ],
    "restaurants": [
        ("What does 'à la carte' mean?", "It means ordering dishes one by one from the menu, rather than a set meal."),
        ("How much should I tip in the United States?", "About 15 to 20 percent of the bill is usual at a sit-down restaurant."),
        ("What is a Michelin star?", "It is a rating the Michelin Guide gives restaurants for outstanding cooking, from one to three stars."),
        ("What is the difference between a bistro and a brasserie?", "A bistro is a small, simple restaurant; a brasserie is larger, often open all day, and traditionally served beer."),
    ],
    "shopping": [
        ("What is Black Friday?", "The Friday after Thanksgiving in the US, when many shops hold big sales."),
        ("Why are prices often set at something like 9.99?", "A price just under a round number looks noticeably cheaper to many shoppers."),
        ("What is a receipt for?", "A receipt proves what you paid, which you may need for a return or a warranty."),
        ("Is it cheaper to buy in bulk?", "Often per unit, but only if you use it all before it spoils."),
    ],
    "smart_home": [
        ("What is a smart home?", "A home whose devices, like lights, heating and locks, can be controlled remotely or automatically."),
        ("Who invented the light bulb?", "Thomas Edison is usually credited, though Joseph Swan and others made working bulbs around the same time."),
        ("Why do LED bulbs save energy?", "They turn more of their power into light and less into heat than old filament bulbs."),
        ("What temperature is comfortable for sleeping?", "Around 16 to 19 °C suits most people."),
    ],
    "text": [
        ("What is a palindrome?", "A word or phrase that reads the same backwards, like 'level'."),
        ("What is the longest word in English?", "In major dictionaries it is usually given as 'pneumonoultramicroscopicsilicovolcanoconiosis'."),
        ("What is the difference between 'their' and 'there'?", "'Their' means belonging to them; 'there' means in that place."),
        ("How many letters are in the English alphabet?", "There are 26 letters in the English alphabet."),
    ],
    "time": [
        ("Why do we have time zones?", "The Sun is overhead at different times around the world, so each region sets its clocks to its own daylight."),
        ("What is Greenwich Mean Time?", "GMT is the mean solar time at Greenwich, London, long the reference for the world's time zones."),
        ("Why do clocks change for daylight saving time?", "To move an hour of daylight from the morning to the evening in summer."),
        ("How many seconds are in a day?", "There are 86,400 seconds in a day."),
    ],
    "translation": [
        ("How many languages are spoken in the world?", "About 7,000 languages are spoken today."),
        ("Which language has the most native speakers?", "Mandarin Chinese has the most native speakers."),
        ("Why is English hard to spell?", "Its spelling kept older pronunciations and borrowed words from many languages."),
        ("What is the official language of Mexico?", "Spanish is the main language of Mexico."),
    ],
    "travel": [
        ("Which is the busiest airport in the world?", "Hartsfield-Jackson Atlanta International has long been the busiest by passengers."),
        ("What causes jet lag?", "Crossing time zones puts your body clock out of step with the local day."),
        ("Do I need a passport to fly within my own country?", "Usually not; an accepted photo ID is enough in most countries, but check with the airline."),
        ("Why do planes fly so high?", "The air is thinner up there, so there is less drag and the engines burn less fuel."),
    ],
    "units": [
        ("Why does the US use miles instead of kilometres?", "The US kept the imperial units it inherited from Britain and never fully switched to metric."),
        ("What is the metric system?", "A decimal system of measurement built on units such as the metre, the kilogram and the litre."),
        ("At what temperature does water boil?", "At sea level water boils at 100 °C, or 212 °F."),
        ("What does a kilogram measure?", "A kilogram measures mass."),
    ],
    "weather": [
        ("What causes thunder?", "Lightning heats the air so fast that it expands with a bang: that is thunder."),
        ("Why is the sky grey when it rains?", "Thick rain clouds block and scatter most of the sunlight, so less light gets through."),
        ("What is a hurricane?", "A hurricane is a large tropical storm with winds of at least 119 km/h."),
        ("How do rainbows form?", "Sunlight is bent and split into colours by raindrops, with the Sun behind you."),
    ],
}  # fmt: skip
TOPIC_ASKED = ["{q}", "Quick question: {q}"]  # each question asked at most twice, plain and with a lead-in
# Of the no_tool rows of a split with topic questions, while they last. 0: recipe 5 (0.25, docs/tools.md) lifted BFCL
# irrelevance from 40% to 65% but missed calls rose from 5% to 20% of the held-out turns due one: not kept.
TOPIC_SHARE = 0.0
# Train "no tool fits" rows whose offered tools are the wanted one's own siblings (same domain first), not unrelated
# ones: the request is one a call row makes when its tool is offered, so only the tools block tells the two apart.
# Why: BFCL's irrelevance offers a function on the question's subject; topic questions (recipes 5, 6) taught
# "a question: text" and cost calls. 0 leaves the rows as they were, draw for draw.
NEAR_SHARE = 0.0
ASK_FOR = [
    "I can do that, but I need {nouns}. Could you tell me?",
    "Sure. Could you tell me {nouns}?",
    "Happy to help. I just need {nouns} first.",
    "To do that I need {nouns}. What should I use?",
]
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


# ---- the functions as tools ----


@functools.cache
def schema(name: str) -> dict:
    """The function's tool schema, by transformers' get_json_schema, less `return` (OpenAI's tools have none)."""
    from transformers.utils import get_json_schema

    s = get_json_schema(TOOLS[name].fn)
    s["function"].pop("return", None)
    return s


def split_tools(split: str) -> list[Tool]:
    held = set(functions.HELD_OUT)
    return [t for name, t in TOOLS.items() if (name in held) == (split == "heldout")]


def phrase(t: Tool) -> str:
    """What a function does, as a verb phrase for a sentence: its description's first clause, lower-cased."""
    d = schema(t.name)["function"]["description"].split(";")[0].rstrip(".")
    return d[0].lower() + d[1:]


# ---- requests ----


def render(value: object) -> str:
    """A value as the request writes it: lists as `a, b and c`, numbers as digits, booleans by their cue."""
    if isinstance(value, bool):
        return ""
    if isinstance(value, list):
        items = [render(v) for v in value]
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return str(value)


def sample_values(t: Tool, rng: random.Random) -> dict:
    """A value for every parameter (optional ones too; the request decides which are said)."""
    for _ in range(20):
        out: dict = {}
        for key, sampler in t.values.items():
            value = sampler(rng) if callable(sampler) else rng.choice(list(sampler))
            out.update(zip(key, value) if isinstance(key, tuple) else [(key, value)])
        for name in t.params():
            if name not in out:
                out[name] = True if t.hint(name) is bool else rng.choice(t.enum(name))
        if len({json.dumps(out[p]) for p in t.distinct}) == len(t.distinct):
            return {n: out[n] for n in t.params()}
    raise ValueError(f"{t.name}: no distinct values for {t.distinct}")


def instantiate(t: Tool, template: str, rng: random.Random) -> tuple[str, dict]:
    """The request text and the arguments it gives: slots outside segments always, each segment's parameter
    when the segment is said."""
    values = sample_values(t, rng)
    said: list[str] = []

    def segment(m: re.Match) -> str:
        if rng.random() < OPTIONAL_SHARE:
            said.append(t.segment_param(m.group(1)))
            return m.group(1)
        return ""

    text = functions.SEGMENT.sub(segment, template)
    said += functions.SLOT.findall(text)
    text = functions.SLOT.sub(lambda m: render(values[m.group(1)]), text)
    return text, {n: values[n] for n in t.params() if n in said}


def join_and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def normal(text: str) -> str:
    return " ".join(text.lower().split())


# ---- the row check ----


def found_in(value: object, text: str, cues: tuple[str, ...] = ()) -> bool:
    """Whether a program can find an argument value in the request: a string as a whole word or phrase (any
    case), a number among the numbers written in digits, each item of a list, a boolean by one of its cues."""
    if isinstance(value, bool):
        return value and any(c.lower() in text.lower() for c in cues)
    if isinstance(value, (int, float)):
        return any(float(n) == float(value) for n in NUMBER.findall(text))
    if isinstance(value, str):
        return bool(value) and re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, re.I) is not None
    if isinstance(value, list):
        return bool(value) and all(found_in(v, text) for v in value)
    return False


def _leaves(value: object) -> list:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [value]


def call_problem(call: object, offered: dict, request: str) -> str | None:
    """Why one call is wrong, or None: its shape, a function not offered, arguments against the schema, a value
    the request does not give."""
    if not isinstance(call, dict) or call.get("type") != "function" or not isinstance(call.get("id"), str):
        return "call shape (id, type: function)"
    fn = call.get("function")
    if not isinstance(fn, dict) or set(fn) != {"name", "arguments"}:
        return "call shape (function: name, arguments)"
    name, arguments = fn["name"], fn["arguments"]
    if name not in offered:
        return f"calls a function not offered ({name})"
    if not isinstance(arguments, dict):
        return f"arguments are not a dict ({name})"
    if found := chat_tools.schema_problem(arguments, offered[name]["parameters"]):
        return f"arguments break the schema: {found.split(':')[0]}"
    cues = _cues(offered[name])
    for key, value in arguments.items():
        if not found_in(value, request, cues.get(key, ())):
            return f"argument not in the request ({name}.{key})"
    return None


@functools.cache
def _by_description() -> dict[str, Tool]:
    return {schema(n)["function"]["description"]: t for n, t in TOOLS.items()}


def _cues(fn: dict) -> dict[str, tuple[str, ...]]:
    """The boolean cues of an offered function's parameters, found by descriptions (which masking keeps)."""
    t = _by_description().get(fn.get("description"))
    if t is None:
        return {}
    props = schema(t.name)["function"]["parameters"]["properties"]
    original = {v.get("description"): p for p, v in props.items()}
    return {
        p: t.cues.get(original.get(v.get("description")), ())
        for p, v in fn["parameters"]["properties"].items()
    }


def _shape_problem(row: object) -> str | None:
    if not isinstance(row, dict) or set(row) != {"id", "kind", "tools", "messages"}:
        return "row keys (id, kind, tools, messages)"
    if row["kind"] not in KINDS:
        return f"unknown kind ({row['kind']})"
    tools = row["tools"]
    if not isinstance(tools, list) or not tools:
        return "no tools"
    for t in tools:
        fn = t.get("function") if isinstance(t, dict) else None
        if (
            t.get("type") != "function"
            or not isinstance(fn, dict)
            or set(fn) != {"name", "description", "parameters"}
        ):
            return "tool shape (type: function, function: name, description, parameters)"
        p = fn["parameters"]
        if p.get("type") != "object" or not isinstance(p.get("properties"), dict):
            return f"tool parameters are not an object schema ({fn['name']})"
    if len({t["function"]["name"] for t in tools}) != len(tools):
        return "a tool offered twice"
    return None


def row_problem(row: dict, gold: dict | None = None) -> str | None:
    """Why a row may not be written, or None. `gold` ({"calls": [{name, arguments}], "mentions": [str]}), what the
    row was built to hold, is compared when given: the calls the assistant makes, and what its text must name."""
    if found := _shape_problem(row):
        return found
    kind, messages = row["kind"], row["messages"]
    offered = {t["function"]["name"]: t["function"] for t in row["tools"]}
    if not isinstance(messages, list) or not messages:
        return "no messages"
    if any(not isinstance(m, dict) for m in messages):
        return "message shape"
    rest = messages[1:] if messages[0].get("role") == "system" else messages
    if len(rest) < 2 or rest[0].get("role") != "user" or rest[1].get("role") != "assistant":
        return "order (system optional, user, assistant)"
    request = rest[0].get("content")
    if not isinstance(request, str) or not request.strip():
        return "empty request"
    reply, after = rest[1], rest[2:]
    calls = reply.get("tool_calls") or []
    if calls:
        if reply.get("content") not in (None, ""):
            return "a call message with text"
        for call in calls:
            if found := call_problem(call, offered, request):
                return found
        ids = [c["id"] for c in calls]
        if len(set(ids)) != len(ids):
            return "call ids repeat"
        results = [m for m in after if m.get("role") == "tool"]
        if results and [m.get("tool_call_id") for m in results] != ids:
            return "results do not answer the calls in order"
        for m, c in zip(results, calls):
            if m.get("name") != c["function"]["name"] or not isinstance(m.get("content"), str):
                return "result name or content"
            try:
                json.loads(m["content"])
            except json.JSONDecodeError:
                return "result is not JSON"
        after = after[len(results) :]
        if any(m.get("role") == "tool" for m in after):
            return "a result after the answer"
        if results and not after:
            return "no answer after the results"
    elif len(after) or not isinstance(reply.get("content"), str) or not reply["content"].strip():
        return "a text reply is one non-empty assistant message"
    final = after[-1] if after else reply
    if len(after) > 1 or final.get("role") != "assistant":
        return "does not end with one assistant message"
    if found := _kind_problem(kind, row["tools"], calls, bool(after), final, messages):
        return found
    if gold is not None:
        made = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in calls]
        if made != gold["calls"]:
            return "calls differ from the gold calls"
        text = (final.get("content") or "").lower()
        if any(w.lower() not in text for w in gold.get("mentions", [])):
            return "the reply does not name what is missing"
    return None


def _kind_problem(
    kind: str, tools: list, calls: list, answered: bool, final: dict, messages: list
) -> str | None:
    n_tools, n_calls = len(tools), len(calls)
    if kind in ("no_tool", "missing") and n_calls:
        return f"{kind} row with a call"
    if kind in ("single", "choose", "parallel") and answered:
        return f"{kind} row with a result"
    if kind == "single" and (n_tools, n_calls) != (1, 1):
        return "single row is not one tool, one call"
    if kind == "choose" and not (2 <= n_tools <= 5 and n_calls == 1):
        return "choose row is not 2-5 tools, one call"
    if kind == "parallel" and not 2 <= n_calls <= 3:
        return "parallel row is not 2-3 calls"
    if kind == "two_step":
        if not (n_calls and answered):
            return "two_step row lacks a call, its result or the answer"
        args = {json.dumps(v) for c in calls for v in _leaves(c["function"]["arguments"])}
        results = [json.loads(m["content"]) for m in messages if m.get("role") == "tool"]
        fresh = [
            v for v in _leaves(results) if json.dumps(v) not in args and not isinstance(v, bool) and v != ""
        ]
        if not any(found_in(v, final["content"]) for v in fresh):
            return "two_step answer quotes nothing from the result"
    return None


# ---- building rows, one kind each ----


class Context:
    """What a split's rows draw on: its functions, system messages, connectives and chit-chat."""

    def __init__(self, split: str, rng: random.Random):
        self.split, self.rng = split, rng
        self.tools = split_tools(split)
        self.chat = list(CHAT[split])
        rng.shuffle(self.chat)
        on = split == "train" and TOPIC_SHARE > 0
        self.topic = [(lead.format(q=q), a, d) for d, qs in TOPIC.items() if on
                      for q, a in qs for lead in TOPIC_ASKED]  # fmt: skip
        if self.topic:  # the held-out split has none: its rows stay as they were, draw for draw
            rng.shuffle(self.topic)

    def ask(self, t: Tool) -> tuple[str, dict]:
        return instantiate(t, self.rng.choice(t.asks), self.rng)

    def others(
        self, used: list[Tool], k: int, siblings: bool = False, unrelated_to: str | None = None
    ) -> list[Tool]:
        """k more tools, not among `used`: same-domain ones first when `siblings`; none related to the domain
        `unrelated_to` (a request nothing offered may serve)."""
        names = {t.name for t in used}
        pool = [t for t in self.tools if t.name not in names]
        if unrelated_to is not None:
            pool = [t for t in pool if not functions.related(t.domain, unrelated_to)]
        self.rng.shuffle(pool)
        if siblings:
            domains = {t.domain for t in used}
            pool.sort(key=lambda t: t.domain not in domains)
        return pool[:k]


def _call(t: Tool, args: dict) -> dict:
    return {"name": t.name, "arguments": args}


def _calls_message(calls: list[dict]) -> dict:
    """The assistant's calls, copies of the gold ones (the row check compares the two; shared, they could not differ)."""
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": f"call_{i}", "type": "function", "function": copy.deepcopy(c)}
                           for i, c in enumerate(calls, 1)]}  # fmt: skip


def _row(ctx: Context, kind: str, offered: list[Tool], request: str, replies: list[dict]) -> dict:
    ctx.rng.shuffle(offered)
    system = (
        [{"role": "system", "content": ctx.rng.choice(SYSTEMS[ctx.split])}]
        if ctx.rng.random() < SYSTEM_SHARE
        else []
    )
    return {"id": "", "kind": kind, "tools": [schema(t.name) for t in offered],
            "messages": [*system, {"role": "user", "content": request}, *replies]}  # fmt: skip


def single(ctx: Context) -> tuple[dict, dict]:
    t = ctx.rng.choice(ctx.tools)
    text, args = ctx.ask(t)
    calls = [_call(t, args)]
    return _row(ctx, "single", [t], text, [_calls_message(calls)]), {"calls": calls}


def choose(ctx: Context) -> tuple[dict, dict]:
    t = ctx.rng.choice(ctx.tools)
    text, args = ctx.ask(t)
    k = ctx.rng.choices(list(CHOOSE_TOOLS), weights=list(CHOOSE_TOOLS.values()))[0]
    offered = [t, *ctx.others([t], k - 1, siblings=ctx.rng.random() < SIBLING_SHARE)]
    calls = [_call(t, args)]
    return _row(ctx, "choose", offered, text, [_calls_message(calls)]), {"calls": calls}


def parallel(ctx: Context) -> tuple[dict, dict] | None:
    n = 2 if ctx.rng.random() < 0.7 else 3
    same = ctx.rng.random() < 0.5  # one function with different arguments, or n different functions
    used = [ctx.rng.choice(ctx.tools)] * n if same else ctx.rng.sample(ctx.tools, n)
    asked = [ctx.ask(t) for t in used]
    calls = [_call(t, args) for t, (_, args) in zip(used, asked)]
    if len({json.dumps(c, sort_keys=True) for c in calls}) < n:
        return None
    distinct = list({t.name: t for t in used}.values())
    offered = distinct + ctx.others(distinct, ctx.rng.randint(0, min(2, 5 - len(distinct))))
    text = ctx.rng.choice(JOINERS[ctx.split][n]).format(*(q for q, _ in asked))
    return _row(ctx, "parallel", offered, text, [_calls_message(calls)]), {"calls": calls}


def no_tool(ctx: Context) -> tuple[dict, dict] | None:
    if ctx.topic and ctx.rng.random() < TOPIC_SHARE:
        prompt, answer, domain = ctx.topic.pop()
        own = [t for t in ctx.tools if t.domain == domain]
        offered = ctx.rng.sample(own, ctx.rng.randint(1, min(2, len(own))))
        if ctx.rng.random() < 0.3:
            offered += ctx.others(offered, 1, unrelated_to=domain)
        return _row(ctx, "no_tool", offered, prompt, [{"role": "assistant", "content": answer}]), {
            "calls": []
        }
    if ctx.chat and ctx.rng.random() < CHAT_SHARE:
        prompt, answer, domain = ctx.chat.pop()
        offered = ctx.others([], ctx.rng.randint(1, 3), unrelated_to=domain)
        return _row(ctx, "no_tool", offered, prompt, [{"role": "assistant", "content": answer}]), {
            "calls": []
        }
    wanted = ctx.rng.choice(ctx.tools)  # a request for a function not offered (nor any like it, unless near)
    text, _ = ctx.ask(wanted)
    near = ctx.split == "train" and NEAR_SHARE > 0 and ctx.rng.random() < NEAR_SHARE
    k = ctx.rng.randint(1, 3)
    offered = ctx.others([wanted], k, siblings=near, unrelated_to=None if near else wanted.domain)
    if not offered or (near and offered[0].domain != wanted.domain):
        return None
    answer = ctx.rng.choice(NO_FIT).format(need=phrase(wanted), offer=phrase(offered[0]))
    return _row(ctx, "no_tool", offered, text, [{"role": "assistant", "content": answer}]), {"calls": []}


def missing(ctx: Context) -> tuple[dict, dict]:
    t = ctx.rng.choice([t for t in ctx.tools if t.missing])
    template = ctx.rng.choice(t.missing)
    text, _ = instantiate(t, template, ctx.rng)
    gone = [p for p in t.required() if p not in functions.SLOT.findall(template)]
    nouns = [t.nouns[p] for p in gone]
    reply = ctx.rng.choice(ASK_FOR).format(nouns=join_and(nouns))
    offered = [t, *ctx.others([t], ctx.rng.randint(0, 2))]
    row = _row(ctx, "missing", offered, text, [{"role": "assistant", "content": reply}])
    return row, {"calls": [], "mentions": nouns}


def two_step(ctx: Context) -> tuple[dict, dict]:
    t = ctx.rng.choice(ctx.tools)
    text, args = ctx.ask(t)
    result = t.fn(**args)
    bound = {n: p.default for n, p in t.params().items() if p.default is not p.empty} | args
    fill = {k: render(v) if isinstance(v, list) else v for k, v in {**bound, **result}.items()}
    calls = [_call(t, args)]
    replies = [
        _calls_message(calls),
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "name": t.name,
            "content": json.dumps(result, ensure_ascii=False),
        },
        {"role": "assistant", "content": ctx.rng.choice(t.answers).format(**fill)},
    ]
    offered = [t, *ctx.others([t], ctx.rng.randint(0, 2))]
    return _row(ctx, "two_step", offered, text, replies), {"calls": calls}


BUILDERS = {"single": single, "choose": choose, "parallel": parallel, "no_tool": no_tool, "missing": missing,
            "two_step": two_step}  # fmt: skip


def quotas(n: int, split: str) -> dict[str, int]:
    """Rows per kind: n split by the split's SHARES, largest remainders rounded up, so the counts sum to n."""
    raw = {k: n * SHARES[split][k] for k in KINDS}
    out = {k: int(v) for k, v in raw.items()}
    for k in sorted(KINDS, key=lambda k: out[k] - raw[k])[: n - sum(out.values())]:
        out[k] += 1
    return out


def build(
    split: str, n: int, seed: int, seen: set[str] | None = None
) -> tuple[list[tuple[dict, dict]], Counter]:
    """n checked rows of `split` with their gold, and the rejected candidates counted by reason. Requests in
    `seen` (normal form) are taken already; those of the new rows are added to it."""
    rng = random.Random(f"{split}:{seed}")
    ctx = Context(split, rng)
    seen = set() if seen is None else seen
    kinds = [k for k, c in quotas(n, split).items() for _ in range(c)]
    rng.shuffle(kinds)
    rows, dropped = [], Counter()
    for kind in kinds:
        for _ in range(TRIES):
            made = BUILDERS[kind](ctx)
            if made is None:
                dropped["no distinct candidate"] += 1
                continue
            row, gold = made
            key = normal("\n".join(m["content"] for m in row["messages"] if m["role"] == "user"))
            reason = "duplicate request" if key in seen else row_problem(row, gold)
            if reason:
                dropped[reason.split(" (")[0]] += 1
                continue
            seen.add(key)
            row["id"] = f"tools-{split}-{len(rows):05d}"
            rows.append((row, gold))
            break
        else:
            dropped[f"{kind} row given up after {TRIES} tries"] += 1
    return rows, dropped


# ---- masking ----


def _masked_name(rng: random.Random, taken: set[str], style: int) -> str:
    while True:
        a, b = rng.sample(MASK_WORDS, 2)
        name = [f"{a}_{b}", f"{a}{b.capitalize()}", f"{a}_{rng.randint(2, 99)}", f"fn_{a}"][style % 4]
        if name not in taken:
            taken.add(name)
            return name


def mask(row: dict, rng: random.Random) -> tuple[dict, dict[str, tuple[str, dict[str, str]]]]:
    """The row with each offered function renamed, and each of its parameters with chance MASK_PARAM, everywhere
    (schemas, required lists, calls, results); descriptions, values and texts unchanged. Returns the new row and
    {new function name: (old name, {new parameter: old})}."""
    row = copy.deepcopy(row)
    taken: set[str] = set()
    renames, inverse = {}, {}
    for t in row["tools"]:
        fn = t["function"]
        new = _masked_name(rng, taken, rng.randrange(4))
        params = fn["parameters"]
        held = set(params["properties"])
        names = {p: _masked_name(rng, held, rng.randrange(3)) if rng.random() < MASK_PARAM else p
                 for p in params["properties"]}  # fmt: skip
        renames[fn["name"]] = (new, names)
        inverse[new] = (fn["name"], {v: k for k, v in names.items()})
        fn["name"] = new
        params["properties"] = {names[p]: v for p, v in params["properties"].items()}
        if "required" in params:
            params["required"] = [names[p] for p in params["required"]]
    for m in row["messages"]:
        for call in m.get("tool_calls") or []:
            f = call["function"]
            new, names = renames[f["name"]]
            f["name"], f["arguments"] = new, {names[k]: v for k, v in f["arguments"].items()}
        if m.get("role") == "tool":
            m["name"] = renames[m["name"]][0]
    return row, inverse


# ---- files and provenance ----


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _spread(values: list[int]) -> dict:
    s = sorted(values)
    at = lambda q: s[min(len(s) - 1, int(q * len(s)))]  # noqa: E731
    return {"mean": round(sum(s) / len(s)), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": s[-1]}


def _chars(rows: list[dict]) -> dict:
    """Characters per row (its JSON line) and of its system message and tools JSON (the prompt's fixed part)."""
    line = [len(json.dumps(r, ensure_ascii=False)) for r in rows]
    head = [len(json.dumps(r["tools"], ensure_ascii=False))
            + sum(len(m["content"]) for m in r["messages"] if m["role"] == "system") for r in rows]  # fmt: skip
    return {"row": _spread(line), "system_and_tools": _spread(head),
            "system_and_tools_under_1600": round(sum(h < 1600 for h in head) / len(head), 3)}  # fmt: skip


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write(
    out_dir: Path, n_train: int = 3000, n_heldout: int = 300, seed: int = 0, mask_share: float = MASK_SHARE
) -> dict:
    """Write train.jsonl, heldout.jsonl and train.jsonl.provenance.json under out_dir; returns the provenance.
    A `mask_share` of the train rows are masked (held-out rows never are)."""
    t0 = time.time()
    out_dir = Path(out_dir)
    seen: set[str] = set()
    files, by_kind, dropped, chars, masked = {}, {}, {}, {}, Counter()
    rng = random.Random(f"mask:{seed}")
    for split, n in (("train", n_train), ("heldout", n_heldout)):
        built, dropped[split] = build(split, n, seed, seen)
        rows = [r for r, _ in built]
        if split == "train":
            for i, row in enumerate(rows):
                if rng.random() < mask_share:
                    rows[i] = mask(row, rng)[0]
                    masked[row["kind"]] += 1
        path = out_dir / f"{split}.jsonl"
        _write_rows(path, rows)
        files[split] = {"path": str(path), "rows": len(rows),
                        "with_system": sum(r["messages"][0]["role"] == "system" for r in rows)}  # fmt: skip
        by_kind[split] = {k: sum(r["kind"] == k for r in rows) for k in KINDS}
        chars[split] = _chars(rows)
    here = Path(__file__).parent
    provenance = {
        "outputs": files,
        "by_kind": by_kind,
        "functions": {
            "count": len(TOOLS),
            "train": len(split_tools("train")),
            "held_out": sorted(functions.HELD_OUT),
            "domains": len({t.domain for t in TOOLS.values()}),
        },
        "seed": seed,
        "settings": {
            "n_train": n_train,
            "n_heldout": n_heldout,
            "kind_shares": SHARES,
            "system_share": SYSTEM_SHARE,
            "chat_share": CHAT_SHARE,
            "topic_share": TOPIC_SHARE,
            "near_share": NEAR_SHARE,
            "topic_questions": sum(map(len, TOPIC.values())),
            "optional_share": OPTIONAL_SHARE,
            "choose_tools": {str(k): v for k, v in CHOOSE_TOOLS.items()},
            "sibling_share": SIBLING_SHARE,
            "tries": TRIES,
            "mask_share": mask_share,
            "mask_param": MASK_PARAM,
        },
        "masked": {k: masked[k] for k in KINDS},
        "dropped": {split: dict(sorted(c.items())) for split, c in dropped.items()},
        "chars": chars,
        "sources": {
            f"instructify/synth/{p.name}": _sha(p) for p in (here / "functions.py", here / "tool_data.py")
        },
        "seconds": round(time.time() - t0, 1),
    }
    (out_dir / "train.jsonl.provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--out", type=Path, default=Path("data/tools"), help="folder for the two files and provenance"
    )
    p.add_argument("--train", type=int, default=3000, help="rows in train.jsonl")
    p.add_argument("--heldout", type=int, default=300, help="rows in heldout.jsonl")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    provenance = write(a.out, a.train, a.heldout, a.seed)
    for split, f in provenance["outputs"].items():
        print(
            f"{f['path']}: {f['rows']} rows {provenance['by_kind'][split]}; dropped {provenance['dropped'][split]}"
        )
    return provenance


if __name__ == "__main__":
    main()
