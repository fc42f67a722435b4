"""The function library behind the offline tool-calling data (instructify/synth/tool_data.py).

Each entry is a plain Python function of ours: type hints and a Google-style docstring, so that transformers'
`get_json_schema` writes its tool schema, and a deterministic fake body that returns a small JSON-able result (the
tool message of a two-step conversation). `@tool` registers it with what the generator needs to write requests for
it: request templates (`{param}` slots; a `[...]` segment holds one optional parameter and is said or left out),
templates with a required value left out (the assistant asks for it, naming `nouns[param]`), answer templates
that quote the result, value pools per parameter (each value is written into the request as it appears in the
arguments, so a program can find it), and for a boolean the phrase that turns it on (`cues`).

Our own code: the tool-calling sets on the Hub need the Hub and carry their own licences, and BFCL's functions are
its test set; none of these names or descriptions is BFCL's (tests/test_tool_data.py checks the names).
"""

from __future__ import annotations

import ast
import datetime
import functools
import hashlib
import inspect
import json
import operator
import random
import re
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Sampler = Sequence | Callable[[random.Random], object]

SLOT = re.compile(r"\{(\w+)\}")
SEGMENT = re.compile(r"\[([^\[\]]*)\]")


@dataclass(frozen=True)
class Tool:
    fn: Callable
    domain: str
    asks: tuple[str, ...]  # requests that give every required value
    missing: tuple[str, ...]  # requests that leave out at least one required value
    answers: tuple[str, ...]  # the assistant's reply after the result: str.format over arguments and result
    values: dict = field(default_factory=dict)  # param, or a tuple of params sampled together -> Sampler
    nouns: dict = field(
        default_factory=dict
    )  # required param -> how the assistant names it when it is missing
    cues: dict = field(default_factory=dict)  # boolean param -> the phrases in a request that set it
    distinct: tuple[str, ...] = ()  # params that must not take the same value (origin and destination)

    @property
    def name(self) -> str:
        return self.fn.__name__

    def params(self) -> dict[str, inspect.Parameter]:
        return _params(self.fn)

    def hint(self, name: str) -> object:
        return _hints(self.fn)[name]

    def enum(self, name: str) -> tuple | None:
        """The choices of a Literal parameter, else None."""
        hint = self.hint(name)
        return typing.get_args(hint) if typing.get_origin(hint) is Literal else None

    def segment_param(self, segment: str) -> str | None:
        """The optional parameter a `[...]` segment sets: its one slot, or the boolean whose cue it says."""
        slots = SLOT.findall(segment)
        if slots:
            return slots[0] if len(slots) == 1 else None
        said = [p for p, cues in self.cues.items() if any(c.lower() in segment.lower() for c in cues)]
        return said[0] if len(said) == 1 else None

    def required(self) -> list[str]:
        return [n for n, p in self.params().items() if p.default is inspect.Parameter.empty]


@functools.cache
def _params(fn: Callable) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(fn).parameters)


@functools.cache
def _hints(fn: Callable) -> dict[str, object]:
    return typing.get_type_hints(fn)


TOOLS: dict[str, Tool] = {}

# The functions only the held-out file uses (about a fifth): two whole domains (sports, books) and single functions
# of others, so the held-out file measures calls to functions never trained on, beside familiar kinds of request.
HELD_OUT = (
    "team_latest_score",
    "league_table",
    "team_next_fixtures",
    "book_finder",
    "library_hold_place",
    "air_quality_report",
    "sunrise_sunset_times",
    "first_free_slot",
    "playlist_create",
    "recipe_scale_servings",
    "parcel_tracking",
    "cooking_volume_convert",
    "savings_growth",
    "entry_visa_check",
    "camera_snapshot",
    "gcd_lcm_pair",
    "language_identify",
)

# Domains close enough that a request of one might be served by a tool of the other: a "no tool fits" row never
# offers a tool of a domain related to the request's.
RELATED = {
    frozenset(p)
    for p in [
        ("news", "sports"),
        ("email", "messaging"),
        ("calendar", "reminders"),
        ("maps", "travel"),
        ("maps", "restaurants"),
        ("recipes", "restaurants"),
        ("recipes", "units"),
        ("math", "finance"),
        ("math", "units"),
        ("math", "fitness"),
        ("text", "translation"),
        ("time", "calendar"),
        ("time", "travel"),
        ("music", "smart_home"),
        ("books", "text"),
        ("shopping", "finance"),
    ]
}


def related(a: str, b: str) -> bool:
    return a == b or frozenset((a, b)) in RELATED


def tool(domain: str, *, asks, missing=(), answers, values=None, nouns=None, cues=None, distinct=()):
    """Register a function with its templates; the templates are checked against its signature here, at import."""

    def register(fn: Callable) -> Callable:
        t = Tool(fn, domain, tuple(asks), tuple(missing), tuple(answers), values or {}, nouns or {}, cues or {},
                 tuple(distinct))  # fmt: skip
        _check(t)
        TOOLS[t.name] = t
        return fn

    return register


def _check(t: Tool) -> None:
    """A template must fit its function: known slots only, optional values only inside `[...]` segments or said
    always, every required value in each ask, at least one left out in each missing template, a noun for it, a
    sampler for every parameter that is not an enum or boolean, and a cue inside every boolean's segment."""
    params, required = t.params(), set(t.required())
    sampled = {p for key in t.values for p in (key if isinstance(key, tuple) else (key,))}
    for name in params:
        if t.hint(name) is not bool and not t.enum(name) and name not in sampled:
            raise ValueError(f"{t.name}: no sampler for {name}")
        if (t.hint(name) is bool) != (name in t.cues):
            raise ValueError(f"{t.name}: a boolean, and only a boolean, has cues: {name}")
    for template in t.asks + t.missing:
        for segment in SEGMENT.findall(template):
            param = t.segment_param(segment)
            if param is None or param in required:
                raise ValueError(f"{t.name}: a segment sets one optional parameter: {template!r}")
            if param in t.cues and SLOT.findall(segment):
                raise ValueError(f"{t.name}: a boolean is said by its cue, not a slot: {template!r}")
        unknown = set(SLOT.findall(template)) - set(params)
        if unknown:
            raise ValueError(f"{t.name}: unknown slots {unknown} in {template!r}")
    for template in t.asks:
        if not required <= set(SLOT.findall(SEGMENT.sub("", template))):
            raise ValueError(f"{t.name}: ask lacks a required slot: {template!r}")
    for template in t.missing:
        gone = required - set(SLOT.findall(template))
        if not gone or not all(g in t.nouns for g in gone):
            raise ValueError(
                f"{t.name}: missing template leaves out nothing, or a value without a noun: {template!r}"
            )


# ---- deterministic fake results: a value drawn from a hash of the call, the same in every process ----


def _h(*parts: object) -> int:
    return int(hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12], 16)


def _int(lo: int, hi: int, *parts: object) -> int:
    return lo + _h(*parts) % (hi - lo + 1)


def _pick(options: Sequence, *parts: object):
    return options[_h(*parts) % len(options)]


def _clock(*parts: object) -> str:
    return f"{_int(6, 21, *parts):02d}:{_pick(['00', '15', '30', '45'], *parts, 'm')}"


def _id(prefix: str, *parts: object) -> str:
    return f"{prefix}_{_h(*parts) % 100000:05d}"


# ---- value pools: written into requests verbatim ----

CITIES = ["Paris", "Rome", "Tokyo", "Lisbon", "Nairobi", "Toronto", "Sydney", "Berlin", "Madrid", "Oslo",
          "Cairo", "Seoul", "Lima", "Dublin", "Prague", "Vienna", "Chicago", "Denver", "Boston", "Mumbai",
          "Bangkok", "Istanbul", "Athens", "Warsaw", "Helsinki", "Montreal", "Seattle", "Austin", "Melbourne",
          "Buenos Aires", "Cape Town", "Mexico City", "Singapore", "Copenhagen", "Zurich", "Edinburgh", "Kyoto",
          "Hanoi", "Marrakesh", "Reykjavik"]  # fmt: skip
PEOPLE = ["Ana", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kofi", "Lena",
          "Marco", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen", "Yara",
          "Zoe"]  # fmt: skip
PLACES = ["the airport", "Central Station", "the museum", "Union Square", "the harbour", "Oak Street",
          "the university", "the stadium", "City Hall", "the zoo", "Maple Avenue", "the old town"]  # fmt: skip
ROOMS = ["living room", "bedroom", "kitchen", "office", "nursery", "basement", "hallway"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]  # fmt: skip
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "INR", "SEK", "MXN", "BRL", "ZAR"]
SKIES = ["sunny", "partly cloudy", "overcast", "light rain", "windy", "clear", "foggy", "showery"]


def iso_date(rng: random.Random) -> str:
    return (datetime.date(2025, 1, 1) + datetime.timedelta(days=rng.randrange(700))).isoformat()


def day(rng: random.Random) -> str:
    """A day as people write it: a weekday, an ISO date or a month and day."""
    form = rng.randrange(3)
    if form == 0:
        return rng.choice(WEEKDAYS)
    if form == 1:
        return iso_date(rng)
    return f"{rng.choice(MONTHS)} {rng.randint(1, 28)}"


def clock(rng: random.Random) -> str:
    """A time as people write it: 24-hour, or with am/pm."""
    hour, minute = rng.randint(6, 21), rng.choice([0, 15, 30, 45])
    if rng.random() < 0.5:
        return f"{hour}:{minute:02d}"
    suffix = "am" if hour < 12 else "pm"
    h12 = hour if hour <= 12 else hour - 12
    return f"{h12}{suffix}" if minute == 0 else f"{h12}:{minute:02d}{suffix}"


def ints(lo: int, hi: int) -> Callable[[random.Random], int]:
    return lambda rng: rng.randint(lo, hi)


def amounts(choices: Sequence[float]) -> Callable[[random.Random], float]:
    return lambda rng: rng.choice(choices)


def some(pool: Sequence, lo: int, hi: int) -> Callable[[random.Random], list]:
    return lambda rng: rng.sample(list(pool), rng.randint(lo, hi))


def email(rng: random.Random) -> str:
    return f"{rng.choice(PEOPLE).lower()}@{rng.choice(['example.com', 'mail.test', 'work.example.org'])}"


# ---- weather ----


@tool(
    "weather",
    asks=[
        "What's the weather in {city} right now[ in {unit}]?",
        "Is it cold in {city} at the moment?[ Give me the temperature in {unit}.]",
        "Current conditions in {city}[, in {unit}], please.",
    ],
    missing=["What's the weather doing outside right now?"],
    answers=["It's {temperature} degrees and {conditions} in {city} right now."],
    values={"city": CITIES},
    nouns={"city": "the city"},
)
def weather_now(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> dict:
    """Report the current weather in a city.

    Args:
        city: City name.
        unit: Temperature unit.
    """
    c = _int(-5, 33, city)
    return {"city": city, "temperature": c if unit == "celsius" else round(c * 9 / 5 + 32),
            "conditions": _pick(SKIES, city)}  # fmt: skip


@tool(
    "weather",
    asks=[
        "What's the forecast for {city}[ for the next {days} days]?",
        "Give me the {days}-day forecast for {city}[ in {unit}].",
        "Should I pack an umbrella for {city}? Check the forecast[ for the next {days} days].",
    ],
    missing=["What will the weather be like over the next few days?"],
    answers=["Over the next {days} days in {city}: {summary}, highs of {high} and lows of {low}."],
    values={"city": CITIES, "days": ints(2, 10)},
    nouns={"city": "the city"},
)
def weather_outlook(city: str, days: int = 3, unit: Literal["celsius", "fahrenheit"] = "celsius") -> dict:
    """Forecast the weather in a city for the coming days.

    Args:
        city: City name.
        days: Number of days to forecast.
        unit: Temperature unit.
    """
    low = _int(-8, 20, city, days)
    high = low + _int(3, 12, city)
    if unit == "fahrenheit":
        low, high = round(low * 9 / 5 + 32), round(high * 9 / 5 + 32)
    return {"city": city, "summary": _pick(SKIES, city, days), "high": high, "low": low}


@tool(
    "weather",
    asks=[
        "How's the air quality in {city} today?",
        "Is the air in {city} clean enough for a run right now?",
        "Check the AQI for {city}.",
    ],
    missing=["How clean is the air today?"],
    answers=["The air quality index in {city} is {aqi} ({level}); the main pollutant is {pollutant}."],
    values={"city": CITIES},
    nouns={"city": "the city"},
)
def air_quality_report(city: str) -> dict:
    """Look up the current air quality index of a city.

    Args:
        city: City name.
    """
    aqi = _int(12, 180, city)
    level = "good" if aqi <= 50 else "moderate" if aqi <= 100 else "unhealthy"
    return {"city": city, "aqi": aqi, "level": level, "pollutant": _pick(["PM2.5", "ozone", "PM10"], city)}


@tool(
    "weather",
    asks=[
        "When does the sun rise in {city}[ on {date}]?",
        "What time is sunset in {city}[ on {date}]?",
        "Sunrise and sunset times for {city}[ on {date}], please.",
    ],
    missing=["What time does the sun set today?"],
    answers=["In {city} the sun rises at {sunrise} and sets at {sunset}."],
    values={"city": CITIES, "date": day},
    nouns={"city": "the city"},
)
def sunrise_sunset_times(city: str, date: str = "") -> dict:
    """Find the sunrise and sunset times of a city.

    Args:
        city: City name.
        date: The day; today when left out.
    """
    return {"city": city, "sunrise": f"0{_int(5, 7, city, date)}:{_int(10, 59, city)}",
            "sunset": f"{_int(17, 20, city, date)}:{_int(10, 59, date, city)}"}  # fmt: skip


# ---- calendar ----

TITLES = ["Dentist appointment", "Team standup", "Yoga class", "Dinner with Ana", "Project review",
          "Parent-teacher meeting", "Book club", "Car service", "Piano lesson", "Budget meeting",
          "Haircut", "Vet visit"]  # fmt: skip


@tool(
    "calendar",
    asks=[
        'Add "{title}" to my calendar on {date}[ at {time}][ for {duration_minutes} minutes].',
        'Put "{title}" in my calendar for {date}[ at {time}].',
        'Schedule "{title}" on {date}[, {duration_minutes} minutes long].',
    ],
    missing=['Add "{title}" to my calendar.', "Put something on my calendar for {date}."],
    answers=['Done: "{title}" is on your calendar for {date} (event {event_id}).'],
    values={"title": TITLES, "date": day, "time": clock, "duration_minutes": amounts([15, 30, 45, 90, 120])},
    nouns={"date": "the date", "title": "the event's title"},
)
def calendar_add_event(title: str, date: str, time: str = "", duration_minutes: int = 60) -> dict:
    """Add an event to the calendar.

    Args:
        title: Event title.
        date: Day of the event.
        time: Start time.
        duration_minutes: Length in minutes.
    """
    return {"event_id": _id("evt", title, date, time), "title": title, "date": date, "status": "added"}


@tool(
    "calendar",
    asks=[
        "What's on my calendar for {date}?",
        "Do I have anything scheduled on {date}?",
        "Show me my agenda for {date}.",
    ],
    missing=["What do I have on my calendar that day?"],
    answers=["On {date} you have: {events}."],
    values={"date": day},
    nouns={"date": "the date"},
)
def calendar_day_agenda(date: str) -> dict:
    """List the calendar events of one day.

    Args:
        date: The day to list.
    """
    n = _int(1, 3, date)
    events = [f"{_clock(date, i)} {_pick(TITLES, date, i)}" for i in range(n)]
    return {"date": date, "count": n, "events": sorted(events)}


@tool(
    "calendar",
    asks=[
        'Cancel "{title}" on {date}.',
        'Please delete "{title}" from my calendar on {date}.',
        'I can\'t make "{title}" on {date}; take it off my calendar.',
    ],
    missing=['Cancel "{title}" on my calendar.'],
    answers=['"{title}" on {date} is {status}.'],
    values={"title": TITLES, "date": day},
    nouns={"date": "the date"},
)
def calendar_cancel_event(title: str, date: str) -> dict:
    """Remove an event from the calendar.

    Args:
        title: Title of the event.
        date: Day of the event.
    """
    return {"title": title, "date": date, "status": "cancelled"}


@tool(
    "calendar",
    asks=[
        "When's my first free {duration_minutes}-minute slot on {date}[ after {after}]?",
        "Find me {duration_minutes} free minutes on {date}[ after {after}].",
        "I need a {duration_minutes} minute gap in my schedule on {date}. When is it?",
    ],
    missing=["When am I free on {date}?"],
    answers=["Your first free slot on {date} runs from {start} to {end}."],
    values={"date": day, "duration_minutes": amounts([20, 30, 45, 60, 90]), "after": clock},
    nouns={"duration_minutes": "the length of the slot"},
)
def first_free_slot(date: str, duration_minutes: int, after: str = "") -> dict:
    """Find the first free time slot of a given length on a day.

    Args:
        date: The day to search.
        duration_minutes: Length of the slot in minutes.
        after: Earliest start time.
    """
    start = _int(8, 16, date, after)
    end_min = duration_minutes % 60
    return {"start": f"{start}:00", "end": f"{start + duration_minutes // 60}:{end_min:02d}"}


# ---- reminders and timers ----

CHORES = ["call the bank", "water the plants", "take my medication", "pick up the kids", "submit the report",
          "buy milk", "stretch", "book the vet", "back up my laptop", "pay the phone bill"]  # fmt: skip


@tool(
    "reminders",
    asks=[
        "Remind me to {text} at {time}[ on {date}].",
        "Set a reminder for {time}[ on {date}]: {text}.",
        "At {time}[ on {date}], remind me to {text}.",
    ],
    missing=["Remind me to {text}.", "Set a reminder for {time}."],
    answers=['Reminder set: "{text}" at {time} (id {reminder_id}).'],
    values={"text": CHORES, "time": clock, "date": day},
    nouns={"time": "the time for the reminder", "text": "the reminder text"},
)
def remind_me_at(text: str, time: str, date: str = "") -> dict:
    """Set a reminder with a message for a time.

    Args:
        text: What to be reminded of.
        time: When to remind.
        date: The day; today when left out.
    """
    return {"reminder_id": _id("rem", text, time, date), "status": "scheduled"}


@tool(
    "reminders",
    asks=[
        'Add "{item}" to my to-do list[ as {priority} priority].',
        'Put "{item}" on the {list_name} list[, {priority} priority].',
        "I need to {item}; add it to my[ {list_name}] list.",
    ],
    missing=["Can you add a task to my {list_name} list?"],
    answers=['Added "{item}". That list now has {open_items} open items.'],
    values={
        "item": [
            "renew my passport",
            "fix the bike",
            "call mum",
            "clean the gutters",
            "buy printer ink",
            "pay rent",
            "order new glasses",
            "return the library books",
        ],
        "list_name": ["groceries", "work", "home", "weekend", "errands"],
    },
    nouns={"item": "the item to add"},
)
def todo_add_item(
    item: str, list_name: str = "", priority: Literal["low", "normal", "high"] = "normal"
) -> dict:
    """Add an item to a to-do list.

    Args:
        item: The task.
        list_name: Which list; the inbox when left out.
        priority: Priority of the task.
    """
    return {"list": list_name or "inbox", "item": item, "open_items": _int(2, 14, list_name, item)}


@tool(
    "reminders",
    asks=[
        "Set a timer for {minutes} minutes[ called {label}].",
        "Start a {minutes}-minute countdown[ for the {label}].",
        "Timer, {minutes} minutes[, label it {label}], please.",
    ],
    missing=["Start a timer for the {label}."],
    answers=["Timer running: {minutes} minutes, done at {ends_at}."],
    values={"minutes": ints(2, 90), "label": ["pasta", "tea", "laundry", "break", "oven", "nap", "eggs"]},
    nouns={"minutes": "the number of minutes"},
)
def start_countdown(minutes: int, label: str = "") -> dict:
    """Start a countdown timer.

    Args:
        minutes: Length of the timer in minutes.
        label: Name of the timer.
    """
    return {"timer_id": _id("tmr", minutes, label), "ends_at": _clock(minutes, label)}


@tool(
    "reminders",
    asks=[
        "Wake me up at {time}[, repeating {repeat}].",
        "Set an alarm for {time}[, {repeat}].",
        "I need an alarm at {time}[ called {label}].",
    ],
    missing=["Set an alarm for me[, {repeat}]."],
    answers=["Your alarm is set for {time} ({repeat}), id {alarm_id}."],
    values={"time": clock, "label": ["gym", "work", "flight", "meds"]},
    nouns={"time": "the alarm time"},
)
def alarm_set_for(time: str, repeat: Literal["once", "daily", "weekdays"] = "once", label: str = "") -> dict:
    """Set an alarm clock for a time.

    Args:
        time: Alarm time.
        repeat: How often it rings.
        label: Name of the alarm.
    """
    return {"alarm_id": _id("alm", time, repeat, label), "time": time, "repeat": repeat}


# ---- email and messaging ----

SUBJECTS = ["Lunch on Friday", "Quarterly numbers", "Holiday plans", "Invoice 1042", "Meeting notes",
            "Welcome aboard", "Trip photos"]  # fmt: skip
BODIES = ["See you at noon", "The report is attached", "Running ten minutes late", "Thanks for your help",
          "Can we move it to Monday", "Please review before Thursday"]  # fmt: skip


@tool(
    "email",
    asks=[
        'Email {to} with the subject "{subject}" and say "{body}"[, cc {cc}].',
        'Send an email to {to}[ and cc {cc}]: subject "{subject}", message "{body}".',
        'Write to {to}: "{body}". Subject: "{subject}".',
    ],
    missing=['Email {to} with the subject "{subject}".', 'Send an email saying "{body}".'],
    answers=['Sent to {to} with subject "{subject}" (message {message_id}).'],
    values={"to": email, "subject": SUBJECTS, "body": BODIES, "cc": email},
    nouns={
        "body": "the text of the email",
        "to": "the recipient's email address",
        "subject": "the subject line",
    },
    distinct=("to", "cc"),
)
def email_compose_send(to: str, subject: str, body: str, cc: str = "") -> dict:
    """Send an email.

    Args:
        to: Recipient email address.
        subject: Subject line.
        body: Message text.
        cc: Address to copy in.
    """
    return {"message_id": _id("msg", to, subject), "status": "sent"}


@tool(
    "email",
    asks=[
        "Find emails about {query}[ from {sender}][ that are unread].",
        "Search my inbox for {query}[, only unread ones].",
        "Do I have any emails from {sender} about {query}?",
    ],
    missing=["Search my inbox for me[, only unread ones]."],
    answers=['I found {matches} emails; the latest is "{latest_subject}" from {latest_from}.'],
    values={
        "query": [
            "the invoice",
            "flight confirmation",
            "the quarterly report",
            "password reset",
            "wedding photos",
            "the lease",
        ],
        "sender": email,
    },
    nouns={"query": "the search words"},
    cues={"unread_only": ("unread",)},
)
def inbox_search(query: str, unread_only: bool = False, sender: str = "") -> dict:
    """Search the email inbox.

    Args:
        query: Words to search for.
        unread_only: Only unread emails.
        sender: Only emails from this address.
    """
    return {"matches": _int(1, 9, query, sender), "latest_subject": f"Re: {query}",
            "latest_from": sender or f"{_pick(PEOPLE, query).lower()}@example.com"}  # fmt: skip


MESSAGES = ["On my way", "Can you call me back?", "Happy birthday!", "Dinner is at 8", "Don't forget the keys",
            "Running late, start without me"]  # fmt: skip


@tool(
    "messaging",
    asks=[
        'Text {contact}: "{message}"',
        'Send {contact} a message saying "{message}".',
        'Message {contact} "{message}"',
    ],
    missing=["Send a text to {contact}.", 'Text "{message}" to my friend.'],
    answers=["Your message to {contact} was {status} at {sent_at}."],
    values={"contact": PEOPLE, "message": MESSAGES},
    nouns={"message": "the message text", "contact": "the contact's name"},
)
def text_message_send(contact: str, message: str) -> dict:
    """Send a text message to a contact.

    Args:
        contact: Contact name.
        message: Message text.
    """
    return {"status": "delivered", "sent_at": _clock(contact, message)}


@tool(
    "messaging",
    asks=[
        'Post "{message}" in {channel}[ and mark it urgent].',
        'Tell the {channel} channel: "{message}"',
        'Drop a note in {channel}: "{message}"[ (urgent)]',
    ],
    missing=["Post something in {channel} for me."],
    answers=["Posted in {channel}; {notified} people were notified."],
    values={"channel": ["#general", "#design", "#ops", "#random", "#marketing"], "message": MESSAGES},
    nouns={"message": "the message to post"},
    cues={"urgent": ("urgent",)},
)
def team_chat_post(channel: str, message: str, urgent: bool = False) -> dict:
    """Post a message to a team chat channel.

    Args:
        channel: Channel name.
        message: Message text.
        urgent: Notify everyone in the channel.
    """
    return {"channel": channel, "notified": _int(3, 40, channel) * (3 if urgent else 1)}


# ---- music ----

SONGS = [("Yesterday", "The Beatles"), ("Jolene", "Dolly Parton"), ("Hallelujah", "Leonard Cohen"),
         ("Wonderwall", "Oasis"), ("Dancing Queen", "ABBA"), ("Clair de Lune", "Debussy"),
         ("Feeling Good", "Nina Simone"), ("Get Lucky", "Daft Punk")]  # fmt: skip


@tool(
    "music",
    asks=[
        "Play {query}[ on shuffle][ in the {room}].",
        "Put on some {query}[ in the {room}].",
        "I want to hear {query}[, shuffled].",
    ],
    missing=["Play some music for me[ in the {room}]."],
    answers=['Now playing "{track}" from {query}.'],
    values={
        "query": [
            "Miles Davis",
            "lo-fi beats",
            "The Beatles",
            "Taylor Swift",
            "Kind of Blue",
            "jazz for studying",
            "Nina Simone",
            "Daft Punk",
        ],
        "room": ROOMS,
    },
    nouns={"query": "the music you want"},
    cues={"shuffle": ("shuffle",)},
)
def music_play(query: str, shuffle: bool = False, room: str = "") -> dict:
    """Play a song, artist, album or playlist.

    Args:
        query: What to play.
        shuffle: Shuffle the order.
        room: Speaker room.
    """
    return {"track": _pick([s for s, _ in SONGS], query, shuffle), "room": room or "all rooms"}


@tool(
    "music",
    asks=[
        'Queue up "{title}"[ by {artist}].',
        'Add "{title}"[ by {artist}] to the queue.',
        'After this song, play "{title}"[ by {artist}].',
    ],
    missing=["Add a song to the queue."],
    answers=['"{title}" is number {position} in the queue.'],
    values={("title", "artist"): SONGS},
    nouns={"title": "the song"},
)
def music_queue_track(title: str, artist: str = "") -> dict:
    """Add a song to the play queue.

    Args:
        title: Song title.
        artist: Performer.
    """
    return {"title": title, "position": _int(2, 9, title)}


@tool(
    "music",
    asks=[
        'Make a playlist called "{name}" with {songs}.',
        'Create a new playlist "{name}" and add {songs}.',
    ],
    missing=['Make a playlist called "{name}".'],
    answers=['Created "{name}" with {tracks} songs (playlist {playlist_id}).'],
    values={
        "name": ["Road trip", "Sunday morning", "Workout", "Focus", "Dinner party"],
        "songs": some([s for s, _ in SONGS], 2, 3),
    },
    nouns={"songs": "the songs to add"},
)
def playlist_create(name: str, songs: list[str]) -> dict:
    """Create a playlist from a list of songs.

    Args:
        name: Playlist name.
        songs: Song titles to add.
    """
    return {"playlist_id": _id("pl", name, songs), "tracks": len(songs)}


# ---- maps ----


@tool(
    "maps",
    asks=[
        "Give me [{mode} ]directions from {origin} to {destination}[ avoiding tolls].",
        "What's the best way from {origin} to {destination}?",
        "Plan a route from {origin} to {destination}[ with no toll roads].",
    ],
    missing=["How do I get to {destination}?"],
    answers=[
        "From {origin} to {destination} is {distance_km} km, about {duration_minutes} minutes via {via}."
    ],
    values={"origin": PLACES, "destination": PLACES},
    nouns={"origin": "your starting point"},
    cues={"avoid_tolls": ("avoiding tolls", "no toll roads")},
    distinct=("origin", "destination"),
)
def route_plan(
    origin: str,
    destination: str,
    mode: Literal["driving", "walking", "cycling", "transit"] = "driving",
    avoid_tolls: bool = False,
) -> dict:
    """Plan a route between two places.

    Args:
        origin: Start point.
        destination: End point.
        mode: How to travel.
        avoid_tolls: Avoid toll roads.
    """
    km = _int(2, 30, origin, destination)
    speed = {"driving": 1.2, "walking": 12, "cycling": 4, "transit": 2}[mode]
    return {"distance_km": km, "duration_minutes": round(km * speed),
            "via": _pick(["the ring road", "Main Street", "the river path", "Line 2"], origin)}  # fmt: skip


@tool(
    "maps",
    asks=[
        "Find a {category} near {near}[ that's open now].",
        "Is there a {category} close to {near}?",
        "Where's the nearest {category} to {near}?[ Only places open now.]",
    ],
    missing=["Find a {category} near me."],
    answers=["The closest {category} is {name}, {distance_m} metres away."],
    values={"near": PLACES},
    nouns={"near": "your location"},
    cues={"open_now": ("open now",)},
)
def places_nearby(
    category: Literal["cafe", "pharmacy", "gas station", "parking garage", "supermarket", "bakery"],
    near: str,
    open_now: bool = False,
) -> dict:
    """Find places of a kind near a location.

    Args:
        category: Kind of place.
        near: Location to search around.
        open_now: Only places open now.
    """
    return {"name": f"{_pick(['Corner', 'Sunrise', 'Green', 'Harbour'], near)} {category.title()}",
            "distance_m": _int(80, 1500, category, near)}  # fmt: skip


@tool(
    "maps",
    asks=[
        "How far is {origin} from {destination}[ in {unit}]?",
        "What's the distance between {origin} and {destination}[ in {unit}]?",
        "Distance from {origin} to {destination}[, in {unit}]?",
    ],
    missing=["How far is it to {destination} from here?"],
    answers=["{origin} and {destination} are {distance} {unit} apart as the crow flies."],
    values={"origin": CITIES, "destination": CITIES},
    nouns={"origin": "the starting city"},
    distinct=("origin", "destination"),
)
def distance_between_places(origin: str, destination: str, unit: Literal["km", "miles"] = "km") -> dict:
    """Measure the straight-line distance between two cities.

    Args:
        origin: First city.
        destination: Second city.
        unit: Distance unit.
    """
    km = _int(150, 12000, *sorted([origin, destination]))
    return {"distance": km if unit == "km" else round(km / 1.609)}


# ---- restaurants ----

CUISINES = ["Thai", "Italian", "Ethiopian", "Mexican", "Japanese", "Lebanese", "vegan", "Korean"]
RESTAURANTS = ["Luigi's", "The Green Fork", "Sakura House", "Casa Lupe", "Blue Door Bistro", "Spice Route"]


@tool(
    "restaurants",
    asks=[
        "Find me a[ {price}] restaurant in {city}[ that serves {cuisine} food].",
        "Any good {cuisine} places in {city}?",
        "Where should I eat in {city}?[ Something {price}.]",
    ],
    missing=["I feel like {cuisine} food tonight. Find me a restaurant."],
    answers=["Try {name} in {area}: {rating} stars."],
    values={"city": CITIES, "cuisine": CUISINES},
    nouns={"city": "the city"},
)
def restaurant_suggestions(
    city: str, cuisine: str = "", price: Literal["cheap", "mid-range", "fancy"] = "mid-range"
) -> dict:
    """Find restaurants in a city.

    Args:
        city: City to search.
        cuisine: Type of food.
        price: Price level.
    """
    return {"name": _pick(RESTAURANTS, city, cuisine), "area": _pick(["the centre", "the old town", "the docks"], city),
            "rating": _int(35, 49, city, cuisine, price) / 10}  # fmt: skip


@tool(
    "restaurants",
    asks=[
        "Book a table for {party_size} at {restaurant} on {date} at {time}.",
        "Can you reserve {restaurant} for {party_size} people, {date} at {time}?",
        "Table at {restaurant}, {date}, {time}, {party_size} of us.",
    ],
    missing=["Book a table for {party_size} at {restaurant}.", "Reserve a table at {restaurant} on {date}."],
    answers=[
        "You're booked at {restaurant} for {party_size} on {date} at {time}; confirmation {confirmation}."
    ],
    values={"restaurant": RESTAURANTS, "date": day, "time": clock, "party_size": ints(2, 10)},
    nouns={"date": "the date", "time": "the time", "party_size": "the number of people"},
)
def table_reservation(restaurant: str, date: str, time: str, party_size: int) -> dict:
    """Reserve a table at a restaurant.

    Args:
        restaurant: Restaurant name.
        date: Day of the booking.
        time: Time of the booking.
        party_size: Number of people.
    """
    return {"confirmation": _id("rsv", restaurant, date, time).upper()}


# ---- recipes ----

DISHES = ["banana bread", "pad thai", "shakshuka", "lasagna", "miso soup", "chicken curry", "guacamole",
          "pancakes", "risotto", "falafel"]  # fmt: skip
INGREDIENTS = ["eggs", "spinach", "feta", "rice", "chickpeas", "tomatoes", "onions", "potatoes", "tofu",
               "mushrooms", "lentils", "zucchini"]  # fmt: skip


@tool(
    "recipes",
    asks=[
        "How do I make {dish}?",
        "Find me a recipe for {dish}[ that takes under {max_minutes} minutes].",
        "I want to cook {dish} tonight[, in {max_minutes} minutes or less]. Got a recipe?",
    ],
    missing=["Find me a quick recipe for dinner."],
    answers=["Here's one: {recipe}, ready in {minutes} minutes, serves {serves}."],
    values={"dish": DISHES, "max_minutes": amounts([20, 30, 45, 60])},
    nouns={"dish": "the dish"},
)
def recipe_lookup(dish: str, max_minutes: int = 60) -> dict:
    """Find a recipe for a dish.

    Args:
        dish: The dish.
        max_minutes: Most time it may take.
    """
    return {"recipe": f"{_pick(['Easy', 'Classic', 'Weeknight'], dish)} {dish}",
            "minutes": min(max_minutes, _int(15, 90, dish)), "serves": _int(2, 6, dish)}  # fmt: skip


@tool(
    "recipes",
    asks=[
        "What can I cook with {ingredients}?[ It should be vegetarian.]",
        "I have {ingredients}. Any recipe ideas[ that are vegetarian]?",
        "Suggest a dinner using {ingredients}.",
    ],
    missing=["What can I cook with what's in my fridge?"],
    answers=["You could make {idea}, about {minutes} minutes."],
    values={"ingredients": some(INGREDIENTS, 2, 3)},
    nouns={"ingredients": "the ingredients you have"},
    cues={"vegetarian": ("vegetarian",)},
)
def recipes_with_ingredients(ingredients: list[str], vegetarian: bool = False) -> dict:
    """Suggest recipes that use the given ingredients.

    Args:
        ingredients: Ingredients at hand.
        vegetarian: Only vegetarian recipes.
    """
    base = _pick(["a frittata", "a stir-fry", "a traybake", "a curry", "a salad"], ingredients, vegetarian)
    return {"idea": f"{base} with {ingredients[0]}", "minutes": _int(15, 50, ingredients)}


@tool(
    "recipes",
    asks=[
        "Scale the {dish} recipe to {servings} servings.",
        "I need {dish} for {servings} people. Adjust the recipe.",
    ],
    missing=["Can you scale the {dish} recipe for me?"],
    answers=["For {servings} servings of {dish}, multiply every ingredient by {factor}."],
    values={"dish": DISHES, "servings": ints(2, 16)},
    nouns={"servings": "the number of servings"},
)
def recipe_scale_servings(dish: str, servings: int) -> dict:
    """Rescale a recipe's amounts to a number of servings.

    Args:
        dish: The recipe.
        servings: Servings wanted.
    """
    return {"factor": round(servings / 4, 2), "base_servings": 4}


# ---- shopping ----

PRODUCTS = ["AA batteries", "paper towels", "coffee filters", "tennis balls", "dish soap", "oat milk"]


@tool(
    "shopping",
    asks=[
        "Search the shop for {query}[ under ${max_price}][, sorted by {sort_by}].",
        "Find {query}[ for less than {max_price} dollars].",
        "I'm looking to buy {query}.[ Sort by {sort_by}.]",
    ],
    missing=["Find me something under ${max_price}."],
    answers=["Top result: {product} at ${price} ({rating} stars)."],
    values={
        "query": [
            "running shoes",
            "a desk lamp",
            "wireless earbuds",
            "a yoga mat",
            "a cast iron pan",
            "a backpack",
            "a phone charger",
        ],
        "max_price": amounts([25, 40, 60, 80, 150, 200]),
    },
    nouns={"query": "the product you're looking for"},
)
def shop_product_search(
    query: str, max_price: float = 0, sort_by: Literal["relevance", "price", "rating"] = "relevance"
) -> dict:
    """Search an online shop's products.

    Args:
        query: What to look for.
        max_price: Highest price in dollars.
        sort_by: Result order.
    """
    price = _int(9, 199, query)
    if max_price:
        price = min(price, max_price - 1)
    return {"product": f"{_pick(['Acme', 'Nordic', 'Basic'], query)} {query.removeprefix('a ')}",
            "price": price, "rating": _int(30, 49, query) / 10}  # fmt: skip


@tool(
    "shopping",
    asks=[
        "Add {product} to my cart[, quantity {quantity}].",
        "Put[ {quantity} packs of] {product} in my basket.",
        "I'd like to order {product}[, {quantity} of them].",
    ],
    missing=["Add {quantity} packs to my cart."],
    answers=["Added {quantity} x {product}; your cart total is ${cart_total}."],
    values={"product": PRODUCTS, "quantity": ints(2, 6)},
    nouns={"product": "the product"},
)
def cart_add_product(product: str, quantity: int = 1) -> dict:
    """Add a product to the shopping cart.

    Args:
        product: Product name.
        quantity: How many.
    """
    return {"product": product, "cart_total": round(_int(300, 9000, product, quantity) / 100, 2)}


@tool(
    "shopping",
    asks=[
        "Where's my package {tracking_number}?",
        "Track parcel {tracking_number}.",
        "Any update on shipment {tracking_number}?",
    ],
    missing=["Where's my package?"],
    answers=["Parcel {tracking_number} is {status}, last scanned in {location}."],
    values={
        "tracking_number": lambda rng: "".join(
            rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ0123456789") for _ in range(12)
        )
    },
    nouns={"tracking_number": "the tracking number"},
)
def parcel_tracking(tracking_number: str) -> dict:
    """Track a parcel by its tracking number.

    Args:
        tracking_number: Carrier's tracking number.
    """
    return {"status": _pick(["in transit", "out for delivery", "at the depot"], tracking_number),
            "location": _pick(CITIES, tracking_number)}  # fmt: skip


# ---- currency ----

MONEY = [20, 45, 75, 100, 120, 250, 500, 1000, 1500, 12.5, 99.99, 2500]


def _rate(a: str, b: str) -> float:
    return round(_int(20, 400, a, b) / 100, 4)


@tool(
    "currency",
    asks=[
        "Convert {amount} {from_currency} to {to_currency}.",
        "How much is {amount} {from_currency} in {to_currency}?",
        "What do I get for {amount} {from_currency} in {to_currency}?",
    ],
    missing=["Convert {amount} to {to_currency}.", "How much is {amount} {from_currency} worth?"],
    answers=["{amount} {from_currency} is about {converted} {to_currency} (rate {rate})."],
    values={"amount": amounts(MONEY), "from_currency": CURRENCIES, "to_currency": CURRENCIES},
    nouns={"from_currency": "the currency the amount is in", "to_currency": "the currency to convert into"},
    distinct=("from_currency", "to_currency"),
)
def money_convert(amount: float, from_currency: str, to_currency: str) -> dict:
    """Convert an amount of money between currencies.

    Args:
        amount: Amount to convert.
        from_currency: ISO code of the amount's currency.
        to_currency: ISO code of the target currency.
    """
    rate = _rate(from_currency, to_currency)
    return {"rate": rate, "converted": round(amount * rate, 2)}


@tool(
    "currency",
    asks=[
        "How has {base} against {quote} moved[ over the last {days} days]?",
        "Show me the {base}/{quote} rate history[ for {days} days].",
        "Has {base} gained on {quote} lately?",
    ],
    missing=["How has the {quote} exchange rate changed lately?"],
    answers=["{base}/{quote} went from {start_rate} to {end_rate} ({change_percent}%)."],
    values={"base": CURRENCIES, "quote": CURRENCIES, "days": amounts([7, 14, 30, 90, 365])},
    nouns={"base": "the currency to compare against"},
    distinct=("base", "quote"),
)
def currency_rate_history(base: str, quote: str, days: int = 30) -> dict:
    """Show how an exchange rate moved over recent days.

    Args:
        base: ISO code of the base currency.
        quote: ISO code of the quote currency.
        days: How many days back.
    """
    end = _rate(base, quote)
    start = round(end * (1 + (_int(-60, 60, base, quote, days) / 1000)), 4)
    return {"start_rate": start, "end_rate": end, "change_percent": round((end - start) / start * 100, 2)}


# ---- units ----

LENGTHS = {"meters": 1.0, "kilometers": 1000.0, "miles": 1609.344, "feet": 0.3048, "inches": 0.0254,
           "centimeters": 0.01}  # fmt: skip
WEIGHTS = {"grams": 1.0, "kilograms": 1000.0, "pounds": 453.592, "ounces": 28.3495}
VOLUMES = {"cups": 236.588, "tablespoons": 14.787, "teaspoons": 4.929, "milliliters": 1.0, "liters": 1000.0}
QUANTITIES = [2, 3, 5, 8, 12, 15, 20, 42, 100, 250, 2.5, 0.75, 6.5]
UNIT_ASKS = [
    "Convert {value} {from_unit} to {to_unit}.",
    "How many {to_unit} is {value} {from_unit}?",
    "{value} {from_unit} in {to_unit}, please.",
]
UNIT_ANSWERS = ["{value} {from_unit} is {result} {to_unit}."]


def _scaled(value: float, table: dict, a: str, b: str) -> dict:
    return {"result": round(value * table[a] / table[b], 3)}


@tool(
    "units",
    asks=UNIT_ASKS,
    missing=["Convert {from_unit} to {to_unit} for me."],
    answers=UNIT_ANSWERS,
    values={"value": amounts(QUANTITIES)},
    nouns={"value": "the length to convert"},
    distinct=("from_unit", "to_unit"),
)
def length_convert(
    value: float,
    from_unit: Literal["meters", "kilometers", "miles", "feet", "inches", "centimeters"],
    to_unit: Literal["meters", "kilometers", "miles", "feet", "inches", "centimeters"],
) -> dict:
    """Convert a length between units.

    Args:
        value: The length.
        from_unit: Its unit.
        to_unit: Unit wanted.
    """
    return _scaled(value, LENGTHS, from_unit, to_unit)


@tool(
    "units",
    asks=UNIT_ASKS,
    missing=["Convert {from_unit} to {to_unit} for me."],
    answers=UNIT_ANSWERS,
    values={"value": amounts([-40, -5, 0, 12, 21.5, 37, 100, 180, 300])},
    nouns={"value": "the temperature to convert"},
    distinct=("from_unit", "to_unit"),
)
def temperature_convert(
    value: float,
    from_unit: Literal["celsius", "fahrenheit", "kelvin"],
    to_unit: Literal["celsius", "fahrenheit", "kelvin"],
) -> dict:
    """Convert a temperature between scales.

    Args:
        value: The temperature.
        from_unit: Its scale.
        to_unit: Scale wanted.
    """
    c = {"celsius": value, "fahrenheit": (value - 32) * 5 / 9, "kelvin": value - 273.15}[from_unit]
    out = {"celsius": c, "fahrenheit": c * 9 / 5 + 32, "kelvin": c + 273.15}[to_unit]
    return {"result": round(out, 2)}


@tool(
    "units",
    asks=UNIT_ASKS,
    missing=["Convert {from_unit} to {to_unit} for me."],
    answers=UNIT_ANSWERS,
    values={"value": amounts(QUANTITIES)},
    nouns={"value": "the weight to convert"},
    distinct=("from_unit", "to_unit"),
)
def weight_convert(
    value: float,
    from_unit: Literal["grams", "kilograms", "pounds", "ounces"],
    to_unit: Literal["grams", "kilograms", "pounds", "ounces"],
) -> dict:
    """Convert a weight between units.

    Args:
        value: The weight.
        from_unit: Its unit.
        to_unit: Unit wanted.
    """
    return _scaled(value, WEIGHTS, from_unit, to_unit)


@tool(
    "units",
    asks=UNIT_ASKS,
    missing=["Convert {from_unit} to {to_unit} for me."],
    answers=UNIT_ANSWERS,
    values={"value": amounts(QUANTITIES)},
    nouns={"value": "the amount to convert"},
    distinct=("from_unit", "to_unit"),
)
def cooking_volume_convert(
    value: float,
    from_unit: Literal["cups", "tablespoons", "teaspoons", "milliliters", "liters"],
    to_unit: Literal["cups", "tablespoons", "teaspoons", "milliliters", "liters"],
) -> dict:
    """Convert a cooking volume between units.

    Args:
        value: The amount.
        from_unit: Its unit.
        to_unit: Unit wanted.
    """
    return _scaled(value, VOLUMES, from_unit, to_unit)


# ---- finance ----

RATES = [2.5, 3.1, 4, 4.75, 5.2, 6, 6.9, 7.5]


@tool(
    "finance",
    asks=[
        "What's the monthly payment on a {principal} dollar loan at {annual_rate}% for {years} years?",
        "I'm borrowing ${principal} over {years} years at {annual_rate} percent. What will I pay each month?",
    ],
    missing=["What would my monthly payment be on a loan at {annual_rate}% for {years} years?"],
    answers=["The monthly payment would be ${payment}, with ${total_interest} interest in all."],
    values={
        "principal": amounts([5000, 12000, 25000, 180000, 250000, 400000]),
        "annual_rate": amounts(RATES),
        "years": amounts([3, 5, 10, 15, 20, 30]),
    },
    nouns={"principal": "the loan amount"},
)
def loan_monthly_payment(principal: float, annual_rate: float, years: int) -> dict:
    """Calculate the monthly payment on a fixed-rate loan.

    Args:
        principal: Amount borrowed.
        annual_rate: Yearly interest rate in percent.
        years: Term in years.
    """
    r, n = annual_rate / 1200, years * 12
    payment = principal * r / (1 - (1 + r) ** -n)
    return {"payment": round(payment, 2), "total_interest": round(payment * n - principal, 2)}


@tool(
    "finance",
    asks=[
        "If I put ${deposit} in savings at {annual_rate}% for {years} years[ and add ${monthly_addition} a month], how much will I have?",
        "Project {deposit} dollars of savings at {annual_rate} percent over {years} years[, adding {monthly_addition} monthly].",
    ],
    missing=["How much will my savings grow at {annual_rate}%?"],
    answers=["After {years} years you'd have about ${final_value}."],
    values={
        "deposit": amounts([1000, 2500, 5000, 10000, 20000]),
        "annual_rate": amounts(RATES),
        "years": ints(2, 30),
        "monthly_addition": amounts([50, 100, 200, 500]),
    },
    nouns={"deposit": "the starting amount", "years": "the number of years"},
)
def savings_growth(deposit: float, annual_rate: float, years: int, monthly_addition: float = 0) -> dict:
    """Project the value of savings with monthly compound interest.

    Args:
        deposit: Starting amount.
        annual_rate: Yearly interest rate in percent.
        years: How many years.
        monthly_addition: Amount added each month.
    """
    value, r = float(deposit), annual_rate / 1200
    for _ in range(years * 12):
        value = value * (1 + r) + monthly_addition
    return {"final_value": round(value, 2)}


@tool(
    "finance",
    asks=[
        "Split a ${total} bill between {people} people[ with a {tip_percent}% tip].",
        "We owe {total} dollars and there are {people} of us[, plus {tip_percent} percent tip]. How much each?",
        "Dinner came to {total}. Divide it by {people}[ after a {tip_percent}% tip].",
    ],
    missing=["Split the bill {people} ways."],
    answers=["Each person pays ${each}."],
    values={
        "total": amounts([48, 86.5, 120, 154.2, 210, 75]),
        "people": ints(2, 8),
        "tip_percent": amounts([10, 15, 18, 20]),
    },
    nouns={"total": "the bill total"},
)
def bill_split(total: float, people: int, tip_percent: float = 0) -> dict:
    """Split a bill evenly, with an optional tip.

    Args:
        total: Bill total.
        people: Number of people.
        tip_percent: Tip in percent.
    """
    return {"each": round(total * (1 + tip_percent / 100) / people, 2)}


@tool(
    "finance",
    asks=["What's {symbol} trading at?", "Share price for {symbol}, please.", "How is {symbol} doing today?"],
    missing=["How's my stock doing today?"],
    answers=["{symbol} is at ${price}, {change_percent}% today."],
    values={"symbol": ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "SHOP", "SAP", "ASML"]},
    nouns={"symbol": "the ticker symbol"},
)
def share_price_quote(symbol: str) -> dict:
    """Get the latest price of a listed share.

    Args:
        symbol: Ticker symbol.
    """
    return {"price": round(_int(2000, 90000, symbol) / 100, 2), "change_percent": _int(-40, 40, symbol) / 10}


@tool(
    "finance",
    asks=[
        "How much did I spend on {category} in {month}?",
        "What was my {category} spending for {month}?",
        "Total my {category} costs for {month}.",
    ],
    missing=["How much did I spend on {category}?"],
    answers=["You spent ${total} on {category} in {month}, over {transactions} transactions."],
    values={"month": MONTHS},
    nouns={"month": "the month"},
)
def spending_by_category(
    category: Literal["groceries", "dining", "transport", "entertainment", "utilities"], month: str
) -> dict:
    """Total the spending in a budget category for a month.

    Args:
        category: Budget category.
        month: Month name.
    """
    return {"total": round(_int(4000, 90000, category, month) / 100, 2), "transactions": _int(3, 40, month)}


# ---- fitness ----

ACTIVITIES = Literal["running", "cycling", "swimming", "yoga", "rowing"]


@tool(
    "fitness",
    asks=[
        "Log {minutes} minutes of {activity}[, {distance_km} km].",
        "I did {activity} for {minutes} minutes today[ and covered {distance_km} km]. Save it.",
        "Record a {activity} workout: {minutes} minutes.",
    ],
    missing=["Log my {activity} workout."],
    answers=["Logged {minutes} minutes of {activity}; that's workout {week_count} this week."],
    # distances never whole numbers, so never the week_count (a two-step answer must quote the result)
    values={"minutes": ints(15, 120), "distance_km": amounts([3.5, 5.2, 8.5, 10.4, 21.1, 30.2])},
    nouns={"minutes": "the length of the workout"},
)
def workout_log(activity: ACTIVITIES, minutes: int, distance_km: float = 0) -> dict:
    """Record a workout in the fitness log.

    Args:
        activity: Kind of workout.
        minutes: Duration in minutes.
        distance_km: Distance covered.
    """
    return {"week_count": _int(1, 6, activity, minutes)}


@tool(
    "fitness",
    asks=[
        "How many calories does {minutes} minutes of {activity} burn[ for someone who weighs {weight_kg} kg]?",
        "Estimate the calories for {activity}, {minutes} minutes[, I weigh {weight_kg} kg].",
    ],
    missing=["How many calories does {activity} burn?"],
    answers=["About {calories} calories."],
    values={"minutes": ints(10, 90), "weight_kg": amounts([55, 62, 70, 78.5, 85, 96])},
    nouns={"minutes": "the number of minutes"},
)
def activity_calories(activity: ACTIVITIES, minutes: int, weight_kg: float = 70) -> dict:
    """Estimate the calories burned by an activity.

    Args:
        activity: Kind of exercise.
        minutes: Duration in minutes.
        weight_kg: Body weight in kilograms.
    """
    met = {"running": 9.8, "cycling": 7.5, "swimming": 8.0, "yoga": 3.0, "rowing": 7.0}[activity]
    return {"calories": round(met * weight_kg * minutes / 60)}


@tool(
    "fitness",
    asks=[
        "What's my BMI? I weigh {weight_kg} kg and I'm {height_cm} cm tall.",
        "Calculate BMI for {weight_kg} kg and {height_cm} cm.",
    ],
    missing=["What's my BMI? I weigh {weight_kg} kg."],
    answers=["Your BMI is {bmi}, in the {category} range."],
    values={
        "weight_kg": amounts([50, 58, 64.5, 72, 80, 91, 104]),
        "height_cm": amounts([155, 162, 170, 176, 183, 191]),
    },
    nouns={"height_cm": "your height"},
)
def bmi_compute(weight_kg: float, height_cm: float) -> dict:
    """Compute body mass index from weight and height.

    Args:
        weight_kg: Weight in kilograms.
        height_cm: Height in centimetres.
    """
    bmi = round(weight_kg / (height_cm / 100) ** 2, 1)
    category = (
        "underweight" if bmi < 18.5 else "healthy" if bmi < 25 else "overweight" if bmi < 30 else "obese"
    )
    return {"bmi": bmi, "category": category}


@tool(
    "fitness",
    asks=[
        "How many steps did I walk on {date}?",
        "Step count for {date}?",
        "Did I hit my step goal on {date}?",
    ],
    missing=["How many steps did I do?"],
    answers=["You walked {steps} steps on {date}, {percent_of_goal}% of your goal."],
    values={"date": day},
    nouns={"date": "the day"},
)
def step_count_for_day(date: str) -> dict:
    """Get the step count of a day.

    Args:
        date: The day.
    """
    steps = _int(1200, 16000, date)
    return {"steps": steps, "percent_of_goal": round(steps / 100)}


# ---- travel ----


@tool(
    "travel",
    asks=[
        "Find flights from {origin} to {destination} on {date}[ in {cabin}][, nonstop only].",
        "I need to fly from {origin} to {destination} on {date}.[ Cabin: {cabin}.]",
        "Any flights {origin} to {destination} on {date}?[ Nonstop only.]",
    ],
    missing=["Find me a flight from {origin} to {destination}.", "I want to fly to {destination} on {date}."],
    answers=["Best option: {airline} {flight}, departing {departs}, ${price}."],
    values={"origin": CITIES, "destination": CITIES, "date": day},
    nouns={"date": "the travel date", "origin": "the departure city"},
    cues={"nonstop": ("nonstop",)},
    distinct=("origin", "destination"),
)
def flight_finder(
    origin: str,
    destination: str,
    date: str,
    cabin: Literal["economy", "premium", "business", "first"] = "economy",
    nonstop: bool = False,
) -> dict:
    """Search flights between two cities on a day.

    Args:
        origin: Departure city.
        destination: Arrival city.
        date: Travel day.
        cabin: Cabin class.
        nonstop: Only direct flights.
    """
    airline = _pick(["SkyWays", "Aerolux", "Northwind Air", "Coastal"], origin, destination)
    return {"airline": airline, "flight": f"{airline[:2].upper()}{_int(100, 999, origin, date)}",
            "departs": _clock(origin, destination, date), "price": _int(90, 1400, origin, destination, cabin)}  # fmt: skip


@tool(
    "travel",
    asks=[
        "Is flight {flight_number} on time?",
        "What's the status of {flight_number}?",
        "Has {flight_number} landed yet?",
    ],
    missing=["Is my flight on time?"],
    answers=["{flight_number} is {status}, gate {gate}."],
    values={"flight_number": ["BA117", "LH441", "AF66", "QF1", "UA857", "KL1001", "EK203", "NH10"]},
    nouns={"flight_number": "the flight number"},
)
def flight_live_status(flight_number: str) -> dict:
    """Check the live status of a flight.

    Args:
        flight_number: Airline code and number.
    """
    return {"status": _pick(["on time", "delayed 25 minutes", "boarding", "landed"], flight_number),
            "gate": f"{_pick('ABCD', flight_number)}{_int(1, 40, flight_number)}"}  # fmt: skip


@tool(
    "travel",
    asks=[
        "Find a hotel in {city} from {check_in} for {nights} nights[ for {guests} guests].",
        "I need a room in {city}, checking in {check_in}, {nights} nights[, {guests} people].",
    ],
    missing=["Find me a hotel in {city} for {nights} nights."],
    answers=["{hotel} has a room for ${price_per_night} a night."],
    values={"city": CITIES, "check_in": day, "nights": ints(2, 14), "guests": ints(1, 5)},
    nouns={"check_in": "the check-in date"},
)
def hotel_finder(city: str, check_in: str, nights: int, guests: int = 2) -> dict:
    """Search hotels in a city for a stay.

    Args:
        city: Destination city.
        check_in: Arrival day.
        nights: Length of stay.
        guests: Number of guests.
    """
    return {"hotel": f"Hotel {_pick(['Aurora', 'Meridian', 'Lindens', 'Harbour View'], city)}",
            "price_per_night": _int(70, 420, city, check_in, guests)}  # fmt: skip


@tool(
    "travel",
    asks=[
        "How much to rent a[ {car_type}] car in {city} from {pickup_date} for {days} days?",
        "Quote me a rental car in {city}, {days} days starting {pickup_date}.",
    ],
    missing=["I want to rent a car in {city}."],
    answers=["A {car_type} car in {city} for {days} days comes to ${total}."],
    values={"city": CITIES, "pickup_date": day, "days": ints(2, 21)},
    nouns={"pickup_date": "the pickup date", "days": "the number of days"},
)
def car_rental_quote(
    city: str, pickup_date: str, days: int, car_type: Literal["compact", "midsize", "luxury"] = "compact"
) -> dict:
    """Quote the price of a rental car.

    Args:
        city: Pickup city.
        pickup_date: Pickup day.
        days: Rental length in days.
        car_type: Car class.
    """
    per_day = {"compact": 38, "midsize": 55, "luxury": 120}[car_type]
    return {"total": days * per_day + _int(0, 30, city), "company": _pick(["Drivo", "RentRight"], city)}


COUNTRIES = ["Canada", "India", "Brazil", "Japan", "Kenya", "Germany", "Australia", "Mexico", "Vietnam", "Egypt",
             "Turkey", "Chile"]  # fmt: skip


@tool(
    "travel",
    asks=[
        "I hold a passport from {passport_country}. Do I need a visa to visit {destination}?",
        "Visa rules for {passport_country} citizens going to {destination}?",
    ],
    missing=["Do I need a visa for {destination}?"],
    answers=["{passport_country} passport holders {rule} for {destination} (stays up to {max_days} days)."],
    values={"passport_country": COUNTRIES, "destination": COUNTRIES},
    nouns={"passport_country": "the country of your passport"},
    distinct=("passport_country", "destination"),
)
def entry_visa_check(passport_country: str, destination: str) -> dict:
    """Check whether a traveller needs a visa for a country.

    Args:
        passport_country: Country that issued the passport.
        destination: Country to visit.
    """
    return {"rule": _pick(["need a visa", "need no visa", "can get a visa on arrival"], passport_country, destination),
            "max_days": _pick([30, 60, 90], destination)}  # fmt: skip


# ---- smart home ----


@tool(
    "smart_home",
    asks=[
        "Set the thermostat to {temperature} degrees[ in the {room}].",
        "Make it {temperature} degrees[ in the {room}][ on {mode}].",
        "It's chilly; bring the {room} up to {temperature} degrees.",
    ],
    missing=["Adjust the thermostat in the {room}."],
    answers=["The {zone} is set to {temperature} degrees; it's {current} now."],
    values={"temperature": ints(16, 26), "room": ROOMS},
    nouns={"temperature": "the temperature you want"},
)
def thermostat_set(temperature: int, room: str = "", mode: Literal["heat", "cool", "auto"] = "auto") -> dict:
    """Set the thermostat to a target temperature.

    Args:
        temperature: Target in degrees.
        room: Room; the whole house when left out.
        mode: Heating mode.
    """
    # never the target itself: a two-step answer must quote something the call did not say
    return {
        "zone": room or "house",
        "current": temperature + _pick([-4, -3, -2, -1, 1, 2, 3, 4], room, temperature),
    }


@tool(
    "smart_home",
    asks=[
        "Dim the {room} lights to {brightness}%.",
        "Set the {room} lights to {brightness} percent.",
        "Lights in the {room} at {brightness}%, please.",
    ],
    missing=["Dim the lights in the {room}."],
    answers=["The {room} lights are at {brightness}% now, {bulbs} bulbs."],
    values={"room": ROOMS, "brightness": amounts([0, 10, 25, 40, 50, 70, 100])},
    nouns={"brightness": "the brightness level"},
)
def lights_set(room: str, brightness: int) -> dict:
    """Set the brightness of the lights in a room; 0 turns them off.

    Args:
        room: The room.
        brightness: Brightness in percent.
    """
    return {"room": room, "bulbs": _int(1, 6, room)}


@tool(
    "smart_home",
    asks=[
        "Please {action} the {door} door.",
        "Can you {action} the {door} door?",
        "I'm heading out, {action} the {door} door.",
    ],
    missing=["Can you {action} the door?"],
    answers=["The {door} door is now {state}."],
    nouns={"door": "the door"},
)
def door_lock_set(
    door: Literal["front", "back", "garage", "side"], action: Literal["lock", "unlock"]
) -> dict:
    """Lock or unlock a door.

    Args:
        door: Which door.
        action: Lock or unlock.
    """
    return {"door": door, "state": f"{action}ed"}


@tool(
    "smart_home",
    asks=[
        "Start the robot vacuum[ in the {room}][ on {mode} mode].",
        "Run the vacuum[ in the {room}].",
        "Vacuum the {room}[ in {mode} mode], please.",
    ],
    answers=["The vacuum is cleaning the {area}; about {minutes} minutes."],
    values={"room": ROOMS},
)
def vacuum_start_cleaning(room: str = "", mode: Literal["quiet", "standard", "turbo"] = "standard") -> dict:
    """Start the robot vacuum cleaner.

    Args:
        room: Room to clean; the whole home when left out.
        mode: Suction mode.
    """
    return {"area": room or "whole home", "minutes": _int(15, 70, room, mode)}


@tool(
    "smart_home",
    asks=[
        "Show me the {camera} camera.",
        "Grab a picture from the {camera} camera.",
        "What's happening on the {camera} camera?",
    ],
    missing=["Show me the security camera."],
    answers=["Snapshot from the {camera} camera at {taken_at}: {detected}."],
    values={"camera": ["front porch", "driveway", "backyard", "garage", "side gate"]},
    nouns={"camera": "the camera name"},
)
def camera_snapshot(camera: str) -> dict:
    """Take a snapshot from a security camera.

    Args:
        camera: Camera name.
    """
    return {
        "taken_at": _clock(camera),
        "detected": _pick(["nobody there", "a parcel", "a cat", "a car"], camera),
    }


# ---- files ----

FOLDERS = ["Documents", "Downloads", "Desktop", "Pictures", "projects/2024", "Music"]
PATHS = ["~/Documents/taxes.pdf", "~/Desktop/todo.txt", "/srv/logs/app.log", "~/Pictures/beach.jpg",
         "~/projects/notes.md", "~/Downloads/setup.zip"]  # fmt: skip


@tool(
    "files",
    asks=[
        "Find files named {pattern}[ in {folder}].",
        "Search[ {folder}] for {pattern}.",
        "Which files match {pattern}[ under {folder}]?",
    ],
    missing=["Find some files in {folder} for me."],
    answers=["Found {count} matches; the newest is {newest}."],
    values={
        "pattern": ["*.pdf", "report*", "budget*.xlsx", "*.jpg", "notes*.txt", "*.csv"],
        "folder": FOLDERS,
    },
    nouns={"pattern": "the file name or pattern"},
)
def files_search_by_name(pattern: str, folder: str = "") -> dict:
    """Find files whose names match a pattern.

    Args:
        pattern: Name or glob pattern.
        folder: Folder to search; home when left out.
    """
    name = pattern.replace("*", _pick(["q3", "final", "2024", "draft"], pattern, folder))
    return {"count": _int(1, 25, pattern, folder), "newest": f"{folder or '~'}/{name}"}


@tool(
    "files",
    asks=["How big is {path}?", "When was {path} last modified?", "Show me the details of {path}."],
    missing=["How big is that file?"],
    answers=["{path} is {size_kb} KB, last modified {modified}."],
    values={"path": PATHS},
    nouns={"path": "the file path"},
)
def file_details(path: str) -> dict:
    """Show the size and dates of a file.

    Args:
        path: File path.
    """
    return {
        "size_kb": _int(2, 90000, path),
        "modified": f"2025-{_int(1, 12, path):02d}-{_int(1, 28, path):02d}",
    }


@tool(
    "files",
    asks=["Zip the {folder} folder[ as {archive_name}].", "Compress {folder}[ into {archive_name}]."],
    missing=["Zip up the folder for me[ as {archive_name}]."],
    answers=["Created {archive} ({size_mb} MB)."],
    values={"folder": FOLDERS, "archive_name": ["backup.zip", "photos-2024.zip", "handoff.zip"]},
    nouns={"folder": "the folder"},
)
def folder_zip(folder: str, archive_name: str = "") -> dict:
    """Compress a folder into a zip archive.

    Args:
        folder: Folder to compress.
        archive_name: Name of the archive.
    """
    return {"archive": archive_name or f"{folder.split('/')[-1]}.zip", "size_mb": _int(1, 900, folder)}


def _elsewhere(rng: random.Random) -> tuple[str, str]:
    """A file and a folder it is not in already."""
    path = rng.choice(PATHS)
    return path, rng.choice([f for f in FOLDERS if f"/{f}/" not in path])


@tool(
    "files",
    asks=["Move {path} to {folder}.", "Put {path} in the {folder} folder."],
    missing=["Move {path} somewhere tidier."],
    answers=["Moved it; it's now at {new_path}."],
    values={("path", "folder"): lambda rng: _elsewhere(rng)},
    nouns={"folder": "the destination folder"},
)
def file_move_to(path: str, folder: str) -> dict:
    """Move a file into another folder.

    Args:
        path: File to move.
        folder: Destination folder.
    """
    return {"new_path": f"~/{folder}/{path.rsplit('/', 1)[-1]}"}


@tool(
    "files",
    asks=["How much space is {folder} taking up?", "What's the size of my {folder} folder?"],
    missing=["How much space does that folder use?"],
    answers=["{folder} uses {size_gb} GB across {files} files."],
    values={"folder": FOLDERS},
    nouns={"folder": "the folder"},
)
def folder_size(folder: str) -> dict:
    """Report how much disk space a folder uses.

    Args:
        folder: Folder path.
    """
    return {"size_gb": _int(1, 800, folder) / 10, "files": _int(10, 5000, folder)}


# ---- math ----

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _calc(node: ast.AST) -> float:
    """The value of the + - * / expressions our sampler writes (never eval)."""
    if isinstance(node, ast.Expression):
        return _calc(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_calc(node.left), _calc(node.right))
    raise ValueError("unsupported expression")


def expression(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 99), rng.randint(2, 40), rng.randint(1, 500)
    return rng.choice([f"{a} * {b} + {c}", f"({c} - {a}) / {b}", f"{a} + {b} * {c}", f"{c} / {b} - {a}"])


@tool(
    "math",
    asks=["What's {expression}?", "Calculate {expression}.", "Work out {expression} for me."],
    missing=["Can you calculate something for me?"],
    answers=["{expression} = {result}."],
    values={"expression": expression},
    nouns={"expression": "the expression to calculate"},
)
def arithmetic_evaluate(expression: str) -> dict:
    """Evaluate an arithmetic expression.

    Args:
        expression: Expression with + - * / and brackets.
    """
    return {"result": round(_calc(ast.parse(expression, mode="eval")), 4)}


@tool(
    "math",
    asks=[
        "What's the area of a circle with radius {radius}[ {unit}]?",
        "Circle of radius {radius}[ {unit}]: area and circumference?",
    ],
    missing=["What's the area of a circle?"],
    answers=["Area {area}, circumference {circumference}."],
    values={"radius": amounts([1.5, 2, 3, 4.2, 7, 10, 12.5]), "unit": ["cm", "m", "inches"]},
    nouns={"radius": "the radius"},
)
def circle_measure(radius: float, unit: str = "") -> dict:
    """Compute the area and circumference of a circle.

    Args:
        radius: Radius of the circle.
        unit: Length unit.
    """
    return {"area": round(3.14159265 * radius**2, 2), "circumference": round(2 * 3.14159265 * radius, 2)}


def triangle(rng: random.Random) -> tuple[int, int, int]:
    a, b = rng.randint(3, 15), rng.randint(3, 15)
    return a, b, rng.randint(abs(a - b) + 1, a + b - 1)


@tool(
    "math",
    asks=[
        "Area of a triangle with sides {a}, {b} and {c}?",
        "A triangle has sides {a}, {b}, {c}. What's its area?",
    ],
    missing=["What's the area of a triangle with sides {a} and {b}?"],
    answers=["The area is {area}."],
    values={("a", "b", "c"): triangle},
    nouns={"c": "the third side"},
)
def heron_area(a: float, b: float, c: float) -> dict:
    """Compute a triangle's area from its three side lengths.

    Args:
        a: First side.
        b: Second side.
        c: Third side.
    """
    s = (a + b + c) / 2
    return {"area": round((s * (s - a) * (s - b) * (s - c)) ** 0.5, 2)}


@tool(
    "math",
    asks=[
        "What's the average of {values}?",
        "Give me the mean and median of {values}.",
        "Summarize these numbers: {values}.",
    ],
    missing=["What's the average of my test scores?"],
    answers=["Mean {mean}, median {median}, standard deviation {stdev}."],
    values={"values": lambda rng: [rng.randint(1, 99) for _ in range(rng.randint(3, 6))]},
    nouns={"values": "the numbers"},
)
def numbers_summary(values: list[int]) -> dict:
    """Compute the mean, median and spread of a list of numbers.

    Args:
        values: The numbers.
    """
    s, n = sorted(values), len(values)
    mean = sum(s) / n
    median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {
        "mean": round(mean, 2),
        "median": median,
        "stdev": round((sum((x - mean) ** 2 for x in s) / n) ** 0.5, 2),
    }


@tool(
    "math",
    asks=[
        "What's the percent change from {old} to {new}?",
        "It went from {old} to {new}. By what percentage?",
    ],
    missing=["It went up to {new}. What's the percentage change?"],
    answers=["That's a change of {change}%."],
    values={"old": amounts([40, 80, 120, 250, 19.99, 1000]), "new": amounts([35, 96, 150, 310, 24.5, 870])},
    nouns={"old": "the starting value"},
)
def percent_change(old: float, new: float) -> dict:
    """Compute the percentage change from one value to another.

    Args:
        old: Starting value.
        new: New value.
    """
    return {"change": round((new - old) / old * 100, 2)}


@tool(
    "math",
    asks=[
        "What's the GCD of {a} and {b}?",
        "GCD and LCM of {a} and {b}, please.",
        "Find the least common multiple of {a} and {b}.",
    ],
    missing=["What's the greatest common divisor of {a} and my other number?"],
    answers=["GCD {gcd}, LCM {lcm}."],
    values={"a": ints(4, 240), "b": ints(4, 240)},
    nouns={"b": "the second number"},
    distinct=("a", "b"),
)
def gcd_lcm_pair(a: int, b: int) -> dict:
    """Find the greatest common divisor and least common multiple of two integers.

    Args:
        a: First integer.
        b: Second integer.
    """
    import math

    g = math.gcd(a, b)
    return {"gcd": g, "lcm": a * b // g}


@tool(
    "math",
    asks=["Is {n} prime?", "Is {n} a prime number?", "Check if {n} is prime."],
    missing=["Is my number prime?"],
    answers=["{n}: {verdict}."],
    values={"n": ints(2, 5000)},
    nouns={"n": "the number"},
)
def prime_test(n: int) -> dict:
    """Check whether an integer is prime.

    Args:
        n: The integer.
    """
    factor = next((k for k in range(2, int(n**0.5) + 1) if n % k == 0), None)
    return {"verdict": "prime" if factor is None else f"not prime, divisible by {factor}"}


# ---- text ----

SENTENCES = ["The quick brown fox jumps over the lazy dog", "We meet at the North Gate after lunch",
             "Please bring two copies of the contract", "Our new office in Lisbon opens in spring",
             "The train to Leeds was late again this morning"]  # fmt: skip
TYPOS = {"recieved": "received", "teh": "the", "adress": "address", "wich": "which", "tommorow": "tomorrow",
         "definately": "definitely", "seperate": "separate"}  # fmt: skip


@tool(
    "text",
    asks=['How many words are in "{text}"?', 'Count the words in this: "{text}"'],
    missing=["How many words are in my essay?"],
    answers=["{words} words, {characters} characters."],
    values={"text": SENTENCES},
    nouns={"text": "the text"},
)
def text_word_count(text: str) -> dict:
    """Count the words and characters in a text.

    Args:
        text: The text.
    """
    return {"words": len(text.split()), "characters": len(text)}


@tool(
    "text",
    asks=['Convert "{text}" to {style} case.', 'Make "{text}" {style} case.'],
    missing=["Change this to {style} case."],
    answers=["Here it is: {converted}"],
    values={"text": SENTENCES},
    nouns={"text": "the text"},
)
def text_case_change(text: str, style: Literal["upper", "lower", "title"]) -> dict:
    """Change the letter case of a text.

    Args:
        text: The text.
        style: Case to use.
    """
    return {"converted": {"upper": text.upper(), "lower": text.lower(), "title": text.title()}[style]}


PARAGRAPHS = ["The library will close for repairs in June. Members can still borrow e-books online. The branch reopens in September.",
              "Sales grew in every region this quarter. Costs rose less than expected. We will hire ten more people.",
              "The hike takes about four hours. Bring water and a jacket. The view from the top is worth it."]  # fmt: skip


@tool(
    "text",
    asks=[
        'Summarize this[ in {max_sentences} sentences]: "{text}"',
        'Give me the gist of "{text}"[ in {max_sentences} sentences].',
    ],
    missing=["Can you summarize an article for me?"],
    answers=["Summary: {summary}"],
    values={"text": PARAGRAPHS, "max_sentences": ints(1, 2)},
    nouns={"text": "the text to summarize"},
)
def text_summarize(text: str, max_sentences: int = 3) -> dict:
    """Summarize a text in a few sentences.

    Args:
        text: The text.
        max_sentences: Longest summary in sentences.
    """
    return {"summary": text.split(". ")[0].rstrip(".") + "."}


@tool(
    "text",
    asks=[
        'Give me synonyms for "{word}"[, {limit} of them].',
        "What's another word for {word}?",
        "Synonyms for {word}, please[, {limit} of them].",
    ],
    missing=["Give me some synonyms."],
    answers=["Some synonyms: {synonyms}."],
    values={"word": ["happy", "big", "quick", "smart", "tired", "beautiful"], "limit": ints(2, 6)},
    nouns={"word": "the word"},
)
def synonyms_for_word(word: str, limit: int = 5) -> dict:
    """List synonyms of a word.

    Args:
        word: The word.
        limit: How many synonyms.
    """
    table = {"happy": ["glad", "cheerful", "content", "joyful", "pleased", "merry"],
             "big": ["large", "huge", "vast", "sizeable", "great", "massive"],
             "quick": ["fast", "rapid", "swift", "speedy", "brisk", "nimble"],
             "smart": ["clever", "bright", "sharp", "wise", "able", "astute"],
             "tired": ["weary", "sleepy", "worn out", "drained", "exhausted", "spent"],
             "beautiful": ["lovely", "pretty", "gorgeous", "stunning", "fair", "elegant"]}  # fmt: skip
    return {"synonyms": table.get(word, ["(none found)"])[:limit]}


@tool(
    "text",
    asks=['Fix the spelling: "{text}"', 'Can you correct the typos in "{text}"?'],
    missing=["Check my spelling, please."],
    answers=['Corrected: "{corrected}"'],
    values={
        "text": [
            "I recieved teh package",
            "wich adress should I use",
            "see you tommorow",
            "I will definately call",
            "keep them seperate",
        ]
    },
    nouns={"text": "the text"},
)
def spelling_fix(text: str) -> dict:
    """Correct the spelling in a text.

    Args:
        text: The text.
    """
    return {"corrected": " ".join(TYPOS.get(w, w) for w in text.split())}


# ---- translation ----

PHRASES = {
    "good morning": {"Spanish": "buenos días", "French": "bonjour", "German": "guten Morgen",
                     "Italian": "buongiorno", "Portuguese": "bom dia"},
    "thank you very much": {"Spanish": "muchas gracias", "French": "merci beaucoup", "German": "vielen Dank",
                            "Italian": "grazie mille", "Portuguese": "muito obrigado"},
    "where is the train station": {"Spanish": "¿dónde está la estación de tren?", "French": "où est la gare ?",
                                   "German": "wo ist der Bahnhof?", "Italian": "dov'è la stazione?",
                                   "Portuguese": "onde fica a estação de trem?"},
    "how much does this cost": {"Spanish": "¿cuánto cuesta esto?", "French": "combien ça coûte ?",
                                "German": "was kostet das?", "Italian": "quanto costa questo?",
                                "Portuguese": "quanto custa isso?"},
    "see you tomorrow": {"Spanish": "hasta mañana", "French": "à demain", "German": "bis morgen",
                         "Italian": "a domani", "Portuguese": "até amanhã"},
}  # fmt: skip
LANGUAGES = ["Spanish", "French", "German", "Italian", "Portuguese"]


@tool(
    "translation",
    asks=[
        'Translate "{text}" into {target_language}[ from {source_language}].',
        'How do you say "{text}" in {target_language}?',
        '"{text}" in {target_language}, please.',
    ],
    missing=['Translate "{text}" for me.'],
    answers=['In {target_language}: "{translation}"'],
    values={"text": list(PHRASES), "target_language": LANGUAGES, "source_language": ["English"]},
    nouns={"target_language": "the language to translate into"},
)
def phrase_translate(text: str, target_language: str, source_language: str = "") -> dict:
    """Translate a short phrase into another language.

    Args:
        text: The phrase.
        target_language: Language to translate into.
        source_language: Language of the phrase; detected when left out.
    """
    return {"translation": PHRASES.get(text, {}).get(target_language, text)}


@tool(
    "translation",
    asks=['What language is "{text}"?', 'Which language is this: "{text}"'],
    missing=["What language is this sentence in?"],
    answers=["That's {language} (confidence {confidence})."],
    values={"text": [v for by in PHRASES.values() for v in by.values()]},
    nouns={"text": "the text"},
)
def language_identify(text: str) -> dict:
    """Identify the language a text is written in.

    Args:
        text: The text.
    """
    language = next((lang for by in PHRASES.values() for lang, v in by.items() if v == text), "English")
    return {"language": language, "confidence": _int(80, 99, text) / 100}


# ---- news ----


@tool(
    "news",
    asks=[
        "What are the top {topic} headlines[ in {country}]?",
        "Any {topic} news today[ from {country}]?",
        "Give me the latest {topic} headlines.",
    ],
    missing=["What's in the news[ in {country}]?"],
    answers=['Top {topic} story: "{headline}" ({source}).'],
    values={"country": COUNTRIES},
    nouns={"topic": "the topic"},
)
def headlines_by_topic(
    topic: Literal["world", "business", "technology", "science", "health", "politics"], country: str = ""
) -> dict:
    """Get the top news headlines of a topic.

    Args:
        topic: News topic.
        country: Country of the news.
    """
    return {"headline": f"{_pick(['New', 'Major', 'Surprise'], topic, country)} {topic} report published",
            "source": _pick(["Daily Ledger", "Morning Wire", "Civic Times"], topic)}  # fmt: skip


@tool(
    "news",
    asks=[
        "Search the news for {query}[ from the last {days} days].",
        "Any news about {query}[ in the past {days} days]?",
    ],
    missing=["Search the news for me."],
    answers=['Top story: "{headline}" ({source}, {published}).'],
    values={
        "query": [
            "electric cars",
            "the Mars mission",
            "interest rates",
            "bird flu",
            "solar power",
            "housing prices",
        ],
        "days": amounts([1, 3, 7, 14, 30]),
    },
    nouns={"query": "the search words"},
)
def news_search(query: str, days: int = 7) -> dict:
    """Search recent news articles.

    Args:
        query: Words to search for.
        days: How many days back.
    """
    return {"headline": f"What's next for {query}", "source": _pick(["Daily Ledger", "Morning Wire"], query),
            "published": f"{_int(1, min(days, 9), query)} days ago"}  # fmt: skip


# ---- sports ----

TEAMS = ["Arsenal", "Real Madrid", "the Lakers", "the Yankees", "Bayern Munich", "the Celtics", "Juventus",
         "the Chiefs"]  # fmt: skip


@tool(
    "sports",
    asks=[
        "How did {team} do in their last game?",
        "What was the score in the last {team} game?",
        "Did {team} win their last match?",
    ],
    missing=["What was the score last night?"],
    answers=["{team} {outcome} {score} against {opponent}."],
    values={"team": TEAMS},
    nouns={"team": "the team"},
)
def team_latest_score(team: str) -> dict:
    """Get the final score of a team's most recent game.

    Args:
        team: Team name.
    """
    a, b = _int(0, 5, team), _int(0, 5, team, "b")
    return {"outcome": "won" if a > b else "lost" if a < b else "drew", "score": f"{a}-{b}",
            "opponent": _pick(["Rivertown", "the Comets", "Portside", "United"], team)}  # fmt: skip


@tool(
    "sports",
    asks=[
        "Show me the {league} table[, top {top}].",
        "Who's leading in {league} right now?",
        "Current {league} standings[, just the top {top}], please.",
    ],
    missing=["Show me the league table."],
    answers=["{leader} lead the {league} with {points} points."],
    values={"top": ints(3, 10)},
    nouns={"league": "the league"},
)
def league_table(
    league: Literal["Premier League", "La Liga", "Serie A", "NBA", "Bundesliga"], top: int = 5
) -> dict:
    """Show the current standings of a league.

    Args:
        league: League name.
        top: How many teams to show.
    """
    return {
        "leader": _pick(["Rivertown", "the Comets", "Portside", "United"], league),
        "points": _int(20, 80, league),
    }


@tool(
    "sports",
    asks=[
        "When does {team} play next?",
        "What are the next[ {count}] games for {team}?",
        "Next fixtures for {team}[, {count} of them]?",
    ],
    missing=["When's the next game?"],
    answers=["Next up for {team}: {next_match}."],
    values={"team": TEAMS, "count": ints(2, 5)},
    nouns={"team": "the team"},
)
def team_next_fixtures(team: str, count: int = 3) -> dict:
    """List a team's upcoming games.

    Args:
        team: Team name.
        count: How many games.
    """
    return {
        "next_match": f"vs {_pick(['Rivertown', 'the Comets', 'Portside'], team)} on {_pick(WEEKDAYS, team)}"
    }


# ---- movies and books ----

FILMS = {"Oppenheimer": (2023, "Christopher Nolan"), "Past Lives": (2023, "Celine Song"),
         "The Wild Robot": (2024, "Chris Sanders"), "Inside Out 2": (2024, "Kelsey Mann"),
         "Dune: Part Two": (2024, "Denis Villeneuve"), "Paddington in Peru": (2024, "Dougal Wilson")}  # fmt: skip


@tool(
    "movies",
    asks=["When is {movie} showing in {city}[ on {date}]?", "Showtimes for {movie} in {city}[ on {date}]?"],
    missing=["When is {movie} showing?"],
    answers=["{movie} is on at {cinema} at {times}."],
    values={"movie": list(FILMS), "city": CITIES, "date": day},
    nouns={"city": "the city"},
)
def cinema_showtimes(movie: str, city: str, date: str = "") -> dict:
    """List a film's showtimes at cinemas in a city.

    Args:
        movie: Film title.
        city: City.
        date: The day; today when left out.
    """
    return {"cinema": f"{_pick(['Roxy', 'Odeon Lane', 'Palace'], city)} cinema",
            "times": [_clock(movie, city, date, i) for i in range(2)]}  # fmt: skip


@tool(
    "movies",
    asks=["Who directed {title}?", "Tell me about the film {title}.", "When did {title} come out?"],
    missing=["Who directed that film?"],
    answers=["{title} ({year}) was directed by {director}."],
    values={"title": list(FILMS)},
    nouns={"title": "the film's title"},
)
def film_facts(title: str) -> dict:
    """Get the release year and director of a film.

    Args:
        title: Film title.
    """
    year, director = FILMS.get(title, (None, "unknown"))
    return {"year": year, "director": director}


BOOKS = ["The Salt Road", "Winter Orchard", "A Field Guide to Clouds", "Quiet Machines", "The Lantern Keeper"]


@tool(
    "books",
    asks=[
        "Find books about {query}[ by {author}].",
        "Any good books on {query}[ by {author}]?",
        "Look for a book on {query}.",
    ],
    missing=["Find me a good book[ by {author}]."],
    answers=['Try "{book}" by {book_author} ({year}).'],
    values={
        "query": [
            "stoicism",
            "the history of maps",
            "bird watching",
            "sourdough baking",
            "black holes",
            "Japanese gardens",
        ],
        "author": ["A. Moreno", "J. Okafor", "L. Petrov", "M. Lindqvist"],
    },
    nouns={"query": "the topic"},
)
def book_finder(query: str, author: str = "") -> dict:
    """Search a catalogue for books.

    Args:
        query: Topic or title words.
        author: Author name.
    """
    return {"book": _pick(BOOKS, query, author), "book_author": author or _pick(["R. Hale", "S. Ito"], query),
            "year": _int(1995, 2024, query)}  # fmt: skip


@tool(
    "books",
    asks=[
        'Put a hold on "{title}"[ at the {branch} branch].',
        'Reserve the library book "{title}"[ for pickup at {branch}].',
    ],
    missing=["Place a hold on a book for me[ at the {branch} branch]."],
    answers=['You\'re number {queue_position} in line for "{title}".'],
    values={"title": BOOKS, "branch": ["Central", "Riverside", "Northgate", "Elm Park"]},
    nouns={"title": "the book's title"},
)
def library_hold_place(title: str, branch: str = "") -> dict:
    """Place a hold on a library book.

    Args:
        title: Book title.
        branch: Pickup branch.
    """
    return {"title": title, "queue_position": _int(1, 7, title, branch)}


# ---- time ----


@tool(
    "time",
    asks=[
        "What time is it in {city}?",
        "What's the local time in {city} right now?",
        "Is it night in {city} yet? What's the time there?",
    ],
    missing=["What time is it there right now?"],
    answers=["It's {local_time} in {city} (UTC{utc_offset})."],
    values={"city": CITIES},
    nouns={"city": "the city"},
)
def city_local_time(city: str) -> dict:
    """Tell the current local time in a city.

    Args:
        city: City name.
    """
    offset = _int(-8, 10, city)
    return {"local_time": _clock(city), "utc_offset": f"{offset:+d}"}


@tool(
    "time",
    asks=[
        "If it's {time} in {from_city}, what time is it in {to_city}?",
        "Convert {time} {from_city} time to {to_city} time.",
    ],
    missing=["What's {time} in {to_city} time?"],
    answers=["{time} in {from_city} is {converted} in {to_city}."],
    values={"time": clock, "from_city": CITIES, "to_city": CITIES},
    nouns={"from_city": "the city the time is in"},
    distinct=("from_city", "to_city"),
)
def time_zone_convert(time: str, from_city: str, to_city: str) -> dict:
    """Convert a clock time from one city's time zone to another's.

    Args:
        time: Clock time.
        from_city: City the time is given in.
        to_city: City to convert to.
    """
    converted = _clock(time, from_city, to_city)
    if converted == time:  # a result equal to the request gives a two-step answer nothing to quote
        converted = f"{(int(time[:2]) + 1) % 24:02d}{time[2:]}"
    return {"converted": converted}


@tool(
    "time",
    asks=["How many days are there between {start} and {end}?", "Count the days from {start} to {end}."],
    missing=["How many days are there between {start} and my birthday?"],
    answers=["There are {days} days between them."],
    values={("start", "end"): lambda rng: tuple(sorted([iso_date(rng), iso_date(rng)]))},
    nouns={"end": "the second date"},
    distinct=("start", "end"),
)
def date_difference_days(start: str, end: str) -> dict:
    """Count the days between two dates.

    Args:
        start: First date, YYYY-MM-DD.
        end: Second date, YYYY-MM-DD.
    """
    a, b = datetime.date.fromisoformat(start), datetime.date.fromisoformat(end)
    return {"days": abs((b - a).days)}
