"""Near-miss guards: may two prompts that embed close together share one cached answer?

A similarity threshold alone serves wrong answers. With all-MiniLM-L6-v2 "How do I convert a
string to an int in Java?" and "...an int to a string..." score 0.998, "Which foods are safe to
eat during pregnancy?" and "...not safe..." 0.970; on all 416 pairs of
tests/data/cache_pairs.jsonl the threshold that keeps about half the paraphrases (0.90: 49%)
also lets 55% of the near-misses through (benches/cache_quality.py). So the semantic cache decides in layers (exact hash, nearest
neighbour above a threshold, these guards, then an optional verifier), and the guards reject a
candidate whose prompt differs from the new one in a way that changes the answer:

    numbers differ            2 vs 3 cups, 1901 vs 1951 ("5" = "five", "1,000" = "1000", "2.50" = "2.5")
    operator differs          "2x + 5 = 17" vs "2x - 5 = 17", "x < 5" vs "x > 5"
    negation differs          safe / not safe / unsafe, contain / don't contain, ohne, ne ... pas
    tense differs             "Who is the CEO?" vs "Who was the CEO?"
    language differs          "answer in German" vs "in English", or prompts written in two languages
    unit differs              gallons vs quarts, Celsius vs Kelvin, euros vs pounds
    entity differs            Ruby vs Rust, Alice vs Bob: a capitalised name only one prompt has
    content word substituted  raise vs lower, merge vs compare: any word that carries meaning
    content word added        "symptoms of diabetes" vs "... in children": one asks for more or less
    order changed             "string to int" vs "int to string": the same words, roles swapped

The guards are lexical and deliberately strict: a word that carries meaning must appear in both
prompts, up to case, accents, punctuation, inflection (planet/planets, memorize/memorizing) and
one typo (ibuprofin, recurison). What may differ freely is what does not change an answer:
stopwords, politeness ("please", "could you", "thanks in advance"), the request verb ("tell me",
"explain", "list"), a clause moved as a whole ("In Python, how do I reverse a list?"), and the two
sides of "and"/"or" swapped. A true synonym (benefits/advantages) therefore fails the guards:
knowing synonyms takes a model, which is the verifier's job, not a word list's. The reasons it
may overrule are `SOFT_REASONS`.

Measured (benches/cache_quality.py; everything here was chosen on split=tune only): the guards
pass 0 of 156 tune and 0 of 52 heldout near-misses, and 72/156 (46%) tune and 20/52 (38%)
heldout paraphrases: of the typo, politeness, question-form and reordered ones 70 of 78 on tune
but 19 of 26 on heldout (politeness the lists lack: "many thanks", "I hope you don't mind me
asking"; "w/o" read as an operator), and no synonym, reworded or translated one. Known gaps, not
in the set: modal verbs are stopwords ("Can I take ibuprofen with alcohol?" = "Should I ...?"),
and so are pronouns (him/her).

Cost, pure Python, on this 2-core machine under other load (benches/cache_quality.py prints it):
`analyse` of a 200-character prompt 22 µs (plain text) to 33 µs (numbers, contractions);
`check_shapes` on two analysed ones 12 µs; both fresh, 83 µs, four times the 20 µs aimed for.
A cache therefore analyses each stored prompt once, when it stores it (analyse is memoised per
text; or keep its PromptShape), and the new prompt once per lookup, whatever the number of
candidates: ~45 µs a lookup with one candidate. Reaching 20 µs for two fresh prompts takes the
tokeniser and order check in Rust (rust/src/embed.rs already folds text the same way).

Deterministic, no network, no model; English first, with the cheap parts (stopwords, negations,
number words, language names) also in German, French and Spanish.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from itertools import compress, count, filterfalse
from operator import ne
from typing import NamedTuple

__all__ = ["NearMissGuard", "PromptShape", "analyse", "REASONS", "SOFT_REASONS"]

REASONS = (
    "numbers differ",
    "negation differs",
    "language differs",
    "unit differs",
    "entity differs",
    "content word substituted",
    "content word added",
    "order changed",
    "tense differs",
    "operator differs",
)

# The reasons a verifier (a cross-encoder or an LLM judge) may overrule, when one is configured:
# a different word can be a synonym (benefits/advantages), a word more can be politeness the
# lists lack. On split=tune they are the reasons for 59 of the 84 paraphrases the guards reject
# (19 more are in another language), and for 41 of the 156 near-misses (raise/lower, main/all):
# a verifier asked about these must be able to say no. The other reasons are hard: no verifier
# is asked.
SOFT_REASONS = frozenset({"content word substituted", "content word added"})


# --- word classes ---------------------------------------------------------------------------------
# Each set is a class of words, not examples from the labelled set: a word is here because of
# what it is (a stopword, a unit, a language name), and the set is as complete as that class
# is short.

# Words that do not change what is asked. Deliberately absent, because they do: quantifiers and
# scope (all, every, each, any, some, most, only, main, key, full, brief), direction and position
# (from, into, up, down, before, after, over, under, left, right, against), negations (below),
# and question words other than what/which (how, why, when, where, who).
_EN_FILLER = """
a an the this that these those there here it its i me my mine myself you your yours yourself we us our
ours he him his she her hers they them their theirs one someone something
is are was were be been being am do does did doing done have has had having get got
can could would will shall should may might must
what which whats
of in on at for with by about as and or but if so than then also just very really quite too much to
please pls plz kindly kind thank thanks thx cheers hi hello hey dear sorry bother
appreciate appreciated grateful wondering wonder mind like love help able advance okay ok trouble
tell explain describe show give list name provide share recommend suggest outline
calculate compute find define know want need let
""".split()

# German, French and Spanish stopwords that are not also English words (so "die", "man", "son",
# "pan" stay content words).
_DE_FILLER = """
der das den dem des ein eine einen einem einer eines und oder ist sind bin bist war ich du er sie es wir
ihr mir mich dir dich uns euch mein meine meinen dein deine wie was wo wer welche welcher welches im
auf mit zu zum zur fur von vom bei um aus bitte danke kann konnen konnte wurde sollte soll muss wenn
dass auch noch
""".split()
_FR_FILLER = """
le la les un une des du de et ou est sont suis je tu il elle nous vous ils elles ce cet cette ces mon ma
mes ton ta tes son sa ses notre votre leur leurs que qui quoi quel quelle quels quelles comment pour
dans sur avec par en au aux plait merci bonjour est-ce peux pouvez puis
""".split()
_ES_FILLER = """
el los las una unos unas del y es son soy yo tu ella nosotros ustedes que cual cuales como donde por
para con al mi mis su sus favor gracias hola puedes puede podrias
""".split()
_FILLER = frozenset(_EN_FILLER + _DE_FILLER + _FR_FILLER + _ES_FILLER)

# Negation markers (accents folded). "no" is English and Spanish; "ne"/"n" is the French ne
# (n'est), "un"/"non" prefixes are found by `_NEGATING_PREFIXES`.
_NEGATIONS = frozenset("""
not no never nor none nothing nobody without cannot non
nicht kein keine keinen keinem keiner nie niemals ohne
ne pas jamais sans aucun aucune
nunca sin ningun ninguna tampoco
""".split())
_NEGATING_PREFIXES = ("un", "non", "in", "im", "il", "ir", "dis")

# Politeness that may sit anywhere without changing the question ("please summarise" /
# "summarise, please"); the order guard ignores where these are.
_MOVABLE = frozenset("please pls plz kindly thanks thank cheers sorry really just also very".split())

# Auxiliaries by tense: the only stopwords whose swap changes the answer ("Who is the CEO?"
# asks about now, "Who was the CEO?" about then).
_TENSES = (
    (frozenset({"is", "are", "am"}), frozenset({"was", "were"})),
    (frozenset({"do", "does"}), frozenset({"did"})),
    (frozenset({"has", "have"}), frozenset({"had"})),
)

_TENSE_WORDS = frozenset().union(*(present | past for present, past in _TENSES))

# Coordinators: swapping the two sides of one keeps the meaning ("React and Vue").
_COORDINATORS = frozenset("and or vs versus und oder et ou y o".split())

# Units of measure and currencies, singular and plural, with their common abbreviations.
_UNITS = frozenset("""
mm cm km inch inches ft foot feet yd yard yards mi mile miles nm meter meters metre metres
millimeter millimeters millimetre millimetres centimeter centimeters centimetre centimetres
kilometer kilometers kilometre kilometres micron microns
mg kg gram grams kilogram kilograms milligram milligrams tonne tonnes ton tons oz ounce ounces
lb lbs pound pounds stone stones
ml liter liters litre litres milliliter milliliters millilitre millilitres gallon gallons quart
quarts pint pints cup cups teaspoon teaspoons tsp tablespoon tablespoons tbsp
acre acres hectare hectares sqft
sec secs second seconds min mins minute minutes hr hrs hour hours day days week weeks month
months year years decade decades century centuries ms millisecond milliseconds
celsius fahrenheit kelvin degree degrees
mph kph kmh knot knots pa kpa hpa pascal pascals psi bar atm
kj cal kcal calorie calories joule joules watt watts kw kwh volt volts amp amps
kb mb gb tb pb kib mib gib tib bit bits byte bytes kilobyte kilobytes megabyte megabytes
gigabyte gigabytes terabyte terabytes kibibyte kibibytes mebibyte mebibytes gibibyte gibibytes
dollar dollars usd eur euro euros gbp sterling yen jpy yuan cny rmb rupee rupees franc francs peso
pesos krona kronor krone real reais won bitcoin btc cent cents percent
""".split())

# Language names (English, and the German, French and Spanish names of the common ones), each
# mapped to one key so "Englisch", "anglais" and "English" agree.
_LANGUAGE_NAMES = {
    **dict.fromkeys("english englisch anglais ingles".split(), "en"),
    **dict.fromkeys("german deutsch allemand aleman".split(), "de"),
    **dict.fromkeys("french franzosisch francais frances".split(), "fr"),
    **dict.fromkeys("spanish spanisch espagnol espanol castellano".split(), "es"),
    **dict.fromkeys("italian italienisch italien italiano".split(), "it"),
    **dict.fromkeys("portuguese portugiesisch portugais portugues".split(), "pt"),
    **dict.fromkeys("dutch niederlandisch neerlandais holandes".split(), "nl"),
    **dict.fromkeys("russian russisch russe ruso".split(), "ru"),
    **dict.fromkeys("chinese mandarin cantonese chinesisch chinois chino".split(), "zh"),
    **dict.fromkeys("japanese japanisch japonais japones".split(), "ja"),
    **dict.fromkeys("korean koreanisch coreen coreano".split(), "ko"),
    **dict.fromkeys("arabic arabisch arabe".split(), "ar"),
    **{name: name for name in """
        hebrew hindi bengali urdu punjabi tamil telugu marathi gujarati persian farsi turkish greek
        polish czech slovak hungarian romanian bulgarian serbian croatian slovenian ukrainian
        swedish norwegian danish finnish icelandic estonian latvian lithuanian irish welsh
        catalan basque galician thai vietnamese indonesian malay tagalog filipino swahili zulu
        xhosa afrikaans amharic yoruba hausa igbo somali latin esperanto
    """.split()},
}

# Stopword profiles that tell which language a prompt is written in (accents folded): the most
# frequent function words, chosen to overlap little between the languages.
_LANGUAGE_PROFILES = {
    "en": frozenset("the is are what how why which who when where do does can i you my of to and in for with it this that".split()),
    "de": frozenset("der die das ist wie was warum ich ein eine und nicht mit fur auf wenn es wir sie mein".split()),
    "fr": frozenset("le la les est que qu quel quelle comment pourquoi je un une et des du pour avec pas ce dans".split()),
    "es": frozenset("el la los las es que cual como por para un una y del con mi puedo cuales donde".split()),
    "it": frozenset("il lo gli della di che e come per con non sono ho qual quale perche".split()),
    "pt": frozenset("o os um uma do da dos das em que e como para com nao eu qual voce".split()),
    "nl": frozenset("de het een en van is wat hoe ik niet bij voor met waarom".split()),
}

# Number words → value. English, plus German/French/Spanish where the word is not also an
# English word ("once" is Spanish 11; "elf" German 11; "cent" French 100).
_NUMBER_WORDS = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
    "hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "dozen": 12,
    "first": 1, "third": 3, "fourth": 4, "fifth": 5, "tenth": 10,
    "zwei": 2, "drei": 3, "vier": 4, "funf": 5, "sechs": 6, "sieben": 7, "acht": 8, "neun": 9,
    "zehn": 10, "zwolf": 12, "zwanzig": 20, "hundert": 100, "tausend": 1000,
    "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "sept": 7, "huit": 8, "dix": 10, "douze": 12,
    "vingt": 20, "mille": 1000,
    "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6, "siete": 7, "ocho": 8, "nueve": 9,
    "diez": 10, "doce": 12, "veinte": 20, "cien": 100, "mil": 1000,
}
_LANGUAGE_KEYS = frozenset(_LANGUAGE_NAMES)
_SPECIAL_WORDS = frozenset(_NUMBER_WORDS) | {"cannot"}
_SCALES = frozenset({100, 1000, 10**6, 10**9})
# "one" is a number and a pronoun ("which one", "how one might"): it only counts against a
# digit 1 on the other side, never as an extra number of its own.
_SOFT_ONE = frozenset({"one", "eins", "un", "une", "uno", "una"})

# English contractions: the suffix → what replaces it (n't → not; 's, 're, 'd ... carry no meaning
# a stopword list would not already drop).
_CONTRACTED_NOT = {"can't": "can", "won't": "will", "shan't": "shall", "ain't": "is"}
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:'[^\W\d_]+)*")
_ASCII_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[a-z]+(?:'[a-z]+)*")  # the same on ASCII, 2x faster
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?:\.\d{3}){2,}")
# A capitalised word that does not start a sentence: a name ("Ruby", "Alice", "S&P").
_CAPITALISED = re.compile(r"(?<=[^\s.!?:;\"'(\u201c\u00ab\u00bf\u00a1-])[ \t]+([^\W\d_a-z][^\W_]*)")
# Currency and percent signs read as the words they stand for ("$10" = "10 dollars").
_SYMBOL_WORDS = {"$": " dollar ", "\u20ac": " euro ", "\u00a3": " pound ", "\u00a5": " yen ", "%": " percent "}
# An operator between operands (a digit, a one-letter variable, a bracket): "2x + 5", "x^3",
# "a >= b"; not a dash between words ("in advance - why") nor a hyphen (5-day, x-axis).
_OPERATORS = re.compile(
    r"(?:(?<=\d)|(?<=\b[a-zA-Z])|(?<=\d[a-zA-Z])|(?<=\)))\s*([<>!=]=|[-+*/^=<>\u00d7\u00f7])\s*(?=[\d(]|[a-zA-Z]\b|-\d)"
)
_OPERATOR_HINT = re.compile(r"[<>=+*/^\u00d7\u00f7]|\d\s*-|-\s*\d")
# Anything the fast path in `analyse` cannot tokenise by splitting: digits, apostrophes, currency
# and percent signs, operators.
_SPECIAL_CHAR = re.compile(r"[\d'$\u20ac\u00a3\u00a5%<>=+*/^\u00d7\u00f7\u2018\u2019`]")
_PUNCTUATION_TO_SPACE = str.maketrans(dict.fromkeys(string.punctuation, " "))
_GREETING_INITIALS = frozenset("HhGgDd")
_GREETING = re.compile(r"^\W*(?:(?:hi|hello|hey|dear|greetings|good\s+(?:morning|afternoon|evening|day))\b(?:\s+there)?[\W]*)+", re.I)


class PromptShape(NamedTuple):
    """What the guards compare of one prompt; `analyse` makes it once per distinct text, so a
    cached prompt is analysed when it is stored, not at every lookup."""

    tokens: tuple[str, ...]
    """Normalised words in order: case and accents folded, contractions expanded ("don't" → do
    not), numbers as "#<value>" ("#1000" for "1,000" and for "a thousand")."""
    counts: dict[str, int]
    numbers: dict[str, int]
    soft_ones: int
    """How many times "one" (or eins/un/uno) appears: a number or a pronoun."""
    negations: tuple[int, ...]
    """Index in `tokens` of each negation marker."""
    content: dict[str, str]
    """Each content word (not a stopword, number or negation) → its stem."""
    stems: frozenset[str]
    """The stems of `content`, for matching planets to planet."""
    text: str
    """The prompt as analysed (greeting cut, signs spelled out), where capitals are looked up."""
    languages: frozenset[str]
    """Languages the prompt names ("in German" → {"de"})."""
    auxiliaries: frozenset[str]
    """The tense-bearing auxiliaries the prompt uses (is, was, does, did, ...)."""
    operators: tuple[str, ...]
    """Arithmetic and comparison operators between operands, in order ("2x + 5 = 17" → +, =)."""
    ordered: tuple[str, ...]
    """`tokens` without the politeness words that may sit anywhere ("please")."""


def _fold(text: str) -> str:
    text = text.casefold()
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _number_tokens(digits: str) -> list[str]:
    """"1,000" and "1.000.000" are one number each; "255,87,51" and the decimal comma "2,5"
    are read as separate numbers (the same on both sides, so it does not matter which)."""
    if _THOUSANDS.fullmatch(digits):
        if digits.count(".") > 1:
            return [_canonical(digits.replace(".", "").replace(",", "."))]
        return [_canonical(digits.replace(",", ""))]
    return [_canonical(part) for part in digits.split(",")]


def _canonical(number: str) -> str:
    if "." in number:
        whole, _, frac = number.partition(".")
        frac = frac.rstrip("0")
        whole = whole.lstrip("0") or "0"
        return f"#{whole}.{frac}" if frac else f"#{whole}"
    return "#" + (number.lstrip("0") or "0")


def analyse(text: str) -> PromptShape:
    """Tokenise and classify one prompt. Memoised for prompts up to 4,000 characters, the last
    1,024 of them (~6 KB each at 200 characters); a cache that keeps many stored prompts should
    keep their PromptShape beside them instead."""
    return _analyse_memo(text) if len(text) <= _MEMO_MAX_CHARS else _analyse(text)


_MEMO_MAX_CHARS = 4000


def _analyse(text: str) -> PromptShape:
    if text[:1] in _GREETING_INITIALS:
        text = _GREETING.sub("", text, count=1)
    operators: tuple[str, ...] = ()
    if text.isascii() and _SPECIAL_CHAR.search(text) is None:
        # The common case, ~2.5x faster than the regex: no digits, apostrophes, signs or
        # operators, so words are what lies between punctuation and spaces.
        words = text.lower().translate(_PUNCTUATION_TO_SPACE).split()
        special = not _SPECIAL_WORDS.isdisjoint(words)
    else:
        text = text.translate(_APOSTROPHES)
        for symbol, word in _SYMBOL_WORDS.items():
            if symbol in text:
                text = text.replace(symbol, word)
        if _OPERATOR_HINT.search(text):
            operators = tuple(_OPERATORS.findall(text))
        words = (_ASCII_TOKEN if text.isascii() else _TOKEN).findall(_fold(text))
        special = True
    tokens = _normalise_words(words) if special else words
    counts = Counter(tokens)
    # Single letters are content only when capitalised ("C", "R": languages); "x" in x^2 and
    # the "w" of "w/" are not. Finding capitals costs a regex pass, so only then.
    capitalised = _capitalised(text) if any(len(t) == 1 for t in counts) else frozenset()
    content = {t: stem for t in counts if (stem := _content_stem(t)) is not None}
    if capitalised:
        content.update((t, t) for t in counts if len(t) == 1 and t in capitalised and t not in _FILLER)
    languages = counts.keys() & _LANGUAGE_KEYS
    return PromptShape(
        tokens=tuple(tokens),
        counts=counts,
        numbers={t: n for t, n in counts.items() if t[0] == "#"} if special else {},
        soft_ones=sum(counts.get(w, 0) for w in _SOFT_ONE),
        negations=() if _NEGATIONS.isdisjoint(counts) else tuple(i for i, t in enumerate(tokens) if t in _NEGATIONS),
        content=content,
        stems=frozenset(content.values()),
        text=text,
        languages=frozenset(_LANGUAGE_NAMES[t] for t in languages) if languages else frozenset(),
        operators=operators,
        auxiliaries=frozenset(counts.keys() & _TENSE_WORDS),
        ordered=tuple(filterfalse(_MOVABLE.__contains__, tokens)) if not _MOVABLE.isdisjoint(counts) else tuple(tokens),
    )


_analyse_memo = lru_cache(maxsize=1024)(_analyse)


@lru_cache(maxsize=65536)
def _content_stem(token: str) -> str | None:
    """The stem of a content word; None for stopwords, numbers, negations, "one" and single
    letters (which `analyse` decides on)."""
    if len(token) == 1 or token[0] == "#" or token in _FILLER or token in _NEGATIONS or token in _SOFT_ONE:
        return None
    stem = _stem(token)
    if stem in _FILLER or (token[-1] == "s" and token[:-1] in _FILLER):
        return None  # explaining, whats
    return stem


def _normalise_words(words: list[str]) -> list[str]:
    """Numbers to "#<value>" (digits and number words, "twenty five" and "two hundred" as one),
    contractions expanded."""
    tokens: list[str] = []
    number = scale = 0
    in_number = False
    for word in words:
        if word[0].isdigit():
            if in_number:
                tokens.append(f"#{scale + number}")
                in_number = False
            tokens.extend(_number_tokens(word))
            continue
        value = _NUMBER_WORDS.get(word)
        if value is not None:
            if in_number and value in _SCALES:
                scale += max(number, 1) * value  # two hundred, five thousand
                number = 0
            elif in_number and number % 10 == 0 and 0 < value < 10 and number:
                number += value  # twenty five
            else:
                if in_number:
                    tokens.append(f"#{scale + number}")
                number, scale, in_number = value, 0, True
            continue
        if in_number:
            tokens.append(f"#{scale + number}")
            in_number = False
        if "'" in word:
            _expand_apostrophe(word, tokens)
        elif word == "cannot":
            tokens += ("can", "not")
        else:
            tokens.append(word)
    if in_number:
        tokens.append(f"#{scale + number}")
    return tokens


@lru_cache(maxsize=1024)
def _capitalised(text: str) -> frozenset[str]:
    """Words written with a capital inside a sentence: names, products, places."""
    return frozenset(_fold(w) for w in _CAPITALISED.findall(text))


def _expand_apostrophe(word: str, tokens: list[str]) -> None:
    """don't → do not, can't → can not; drop 's/'re/'ve/'ll/'d/'m (what's → what); French
    elision: l'histoire → histoire, n'est → ne est."""
    if word.endswith("n't"):
        tokens += (_CONTRACTED_NOT.get(word, word[:-3]), "not")
        return
    head, _, tail = word.partition("'")
    if tail in ("s", "re", "ve", "ll", "d", "m"):
        tokens.append(head)
    elif len(head) <= 3 and len(tail) > 1:
        if head in ("n", "ne"):
            tokens.append("ne")
        tokens.append(tail.replace("'", ""))
    else:
        tokens.append(word.replace("'", ""))


def _written_in(shape: PromptShape) -> str | None:
    """The language `shape` is written in, when its stopwords say so clearly."""
    present = shape.counts.keys()
    scores = sorted(((len(present & profile), lang) for lang, profile in _LANGUAGE_PROFILES.items()), reverse=True)
    (top, best), (second, _) = scores[0], scores[1]
    # Two function words and twice the runner-up: "Why do we dream?" is English (why, do) and
    # "Warum träumen wir?" German; one shared word ("in", "la") decides nothing.
    return best if top >= 2 and top >= 2 * second else None


# --- word matching --------------------------------------------------------------------------------

_SUFFIXES = (("ies", "y", 3), ("ied", "y", 3), ("ing", "", 3), ("ed", "", 3), ("es", "", 3),
             ("s", "", 3), ("ly", "", 4), ("e", "", 3))


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """Strip one English inflection: planets → planet, memorizing/memorize → memoriz,
    dictionaries/dictionarys → dictionary, stopping → stop."""
    if word[-1] not in "sgdye":
        return word
    for suffix, replacement, keep in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= keep:
            stem = word[: -len(suffix)] + replacement
            if len(stem) > 3 and stem[-1] == stem[-2] and stem[-1] not in "aeiouls":
                stem = stem[:-1]
            return stem
    return word


def _one_typo(x: str, y: str) -> bool:
    """Damerau distance 1 (one insertion, deletion, substitution or swap of neighbours), same
    first letter, the longer word ≥ 5 letters, Latin script (accents are folded by then): a slip
    of the fingers, not another word (ethanol/methanol, encrypt/decrypt and Ruby/Rust all fail
    this). Words of 4 letters get no slack: one letter turns warm into worm."""
    if x[0] != y[0] or max(len(x), len(y)) < 5 or abs(len(x) - len(y)) > 1 or x[0] == "#":
        return False
    if not (x.isascii() and y.isascii()):
        return False  # one character of Chinese or Japanese is a word, not a slip
    if len(x) == len(y):
        diff = [i for i in range(len(x)) if x[i] != y[i]]
        if len(diff) == 1:
            return True
        return len(diff) == 2 and diff[1] == diff[0] + 1 and x[diff[0]] == y[diff[1]] and x[diff[1]] == y[diff[0]]
    if len(x) > len(y):
        x, y = y, x
    i = 0
    while i < len(x) and x[i] == y[i]:
        i += 1
    return x[i:] == y[i + 1 :]


def _present(word: str, stem: str, own: PromptShape, other: PromptShape) -> bool:
    """`word` is in `other` up to inflection, one typo, or being written as one word on one side
    and two on the other (email / e-mail, lowercase / lower case)."""
    if stem in other.stems:
        return True
    mine = own.tokens
    for i, t in enumerate(mine):
        if t == word:
            if (i and mine[i - 1] + word in other.counts) or (i + 1 < len(mine) and word + mine[i + 1] in other.counts):
                return True
    tokens = other.tokens
    for i, t in enumerate(tokens):
        if _one_typo(word, t):
            return True
        if word.startswith(t) and i + 1 < len(tokens) and word == t + tokens[i + 1]:
            return True
    return False


# --- the guard ------------------------------------------------------------------------------------

class NearMissGuard:
    """Checks a pair of prompts after the nearest-neighbour search: `check(a, b)` is None when
    nothing lexical tells them apart in a way that changes the answer, else the reason.

    Prompts written in two languages never pass (their words differ) and are reported as
    "language differs": the labelled set calls such pairs paraphrases, but an answer is written
    in the language of its question, so a German asker should not get the English answer. A
    verifier may still be asked about them when it is multilingual.

    Stateless and thread-safe; one instance can serve every lookup.
    """

    __slots__ = ()

    def check(self, a: str, b: str) -> str | None:
        """None if `a` and `b` may share an answer as far as the guards can tell; else why not."""
        return self.check_shapes(analyse(a), analyse(b))

    def check_shapes(self, a: PromptShape, b: PromptShape) -> str | None:
        """`check` on prompts already analysed (`analyse(text)`)."""
        if a.tokens == b.tokens and a.operators == b.operators:
            return None
        if a.languages != b.languages:
            return "language differs"
        if a.numbers != b.numbers and _numbers_differ(a, b):
            return "numbers differ"
        if a.operators != b.operators:
            return "operator differs"
        left = [w for w in a.content if w not in b.counts]
        right = [w for w in b.content if w not in a.counts]
        if _prefix_negated(left, b) or _prefix_negated(right, a):
            return "negation differs"
        if (a.negations or b.negations) and _meant_negations(a, b) != _meant_negations(b, a):
            return "negation differs"
        if a.auxiliaries != b.auxiliaries and _tense_differs(a.auxiliaries, b.auxiliaries):
            return "tense differs"
        if left or right:
            reason = _content_differs(a, b, left, right)
            if reason:
                # Two languages also differ in (nearly) every word: say which it is. Looked at
                # only here, since prompts that share their words share their language.
                lang_a, lang_b = _written_in(a), _written_in(b)
                if lang_a and lang_b and lang_a != lang_b:
                    return "language differs"
                return reason
        return _order_changed(a, b)


def _numbers_differ(a: PromptShape, b: PromptShape) -> bool:
    """A number one prompt has more often than the other (a spelled "one" on the other side may
    stand for a digit 1). Plain dict arithmetic: Counter subtraction cost 25 µs a call."""
    for mine, theirs, other in ((a.numbers, b.numbers, b), (b.numbers, a.numbers, a)):
        for token, n in mine.items():
            extra = n - theirs.get(token, 0)
            if token == "#1":
                extra -= other.soft_ones
            if extra > 0:
                return True
    return False


def _tense_differs(a: frozenset[str], b: frozenset[str]) -> bool:
    """"Who is the president?" / "Who was the president?": for one kind of auxiliary, one prompt
    has only present forms (is/are, do/does, has/have) and the other only past ones."""
    for present, past in _TENSES:
        a_now, a_then = not present.isdisjoint(a), not past.isdisjoint(a)
        b_now, b_then = not present.isdisjoint(b), not past.isdisjoint(b)
        if (a_now and not a_then and b_then and not b_now) or (a_then and not a_now and b_now and not b_then):
            return True
    return False


def _prefix_negated(words: list[str], other: PromptShape) -> bool:
    """unsafe / safe, impossible / possible, dislike / like: the word with a negating prefix
    here, without it there."""
    for word in words:
        if word.startswith(_NEGATING_PREFIXES):
            for prefix in _NEGATING_PREFIXES:
                rest = word[len(prefix):]
                if word.startswith(prefix) and len(rest) >= 3 and rest in other.content:
                    return True
    return False


def _meant_negations(a: PromptShape, other: PromptShape) -> int:
    """Negations in `a` that negate something the other prompt also says: any of the next three
    words is in it ("not safe to eat" vs "safe to eat"; "do not need to be" vs "must be": stopwords
    count, or that one would pass). One before words the other never mentions ("if it's not too
    much trouble") is politeness, not meaning; unless the other happens to say "thanks so much",
    a paraphrase lost to keep the rule simple."""
    counts = other.counts
    return sum(any(t in counts for t in a.tokens[i + 1 : i + 4]) for i in a.negations)


def _content_differs(a: PromptShape, b: PromptShape, left: list[str], right: list[str]) -> str | None:
    left = [w for w in left if not _present(w, a.content[w], a, b)]
    right = [w for w in right if not _present(w, b.content[w], b, a)]
    if not left and not right:
        return None
    for word in left + right:
        if word in _UNITS:
            return "unit differs"
    if (left and not _capitalised(a.text).isdisjoint(left)) or (right and not _capitalised(b.text).isdisjoint(right)):
        return "entity differs"
    return "content word substituted" if left and right else "content word added"


def _common_prefix(x: Sequence[str], y: Sequence[str]) -> int:
    """Length of the longest common prefix; the scan runs in C (map/compress), ~0.4 µs for 30
    words where a Python loop takes ~2."""
    return next(compress(count(), map(ne, x, y)), min(len(x), len(y)))


def _order_changed(a: PromptShape, b: PromptShape) -> str | None:
    """The words both prompts share, in `a`'s order, located in `b`. One clause moved as a whole
    keeps the answer ("In Python, how do I reverse a list?" / "How do I reverse a list in
    Python?"); words trading places around a relation ("string to int" / "int to string") do not,
    unless the relation is a coordinator ("React and Vue" / "Vue and React")."""
    seq, other = a.ordered, b.ordered
    # What both start and end with is in order; only the middle needs mapping (usually a few
    # words, so a 200-character pair costs ~3 µs here instead of ~15).
    head = _common_prefix(seq, other)
    tail = _common_prefix(seq[: head - 1 : -1] if head else seq[::-1], other[: head - 1 : -1] if head else other[::-1])
    seq_end, other_end = len(seq) - tail, len(other) - tail
    if head == seq_end or head == other_end:
        return None  # one middle is empty: words were added or dropped, none moved
    positions: dict[str, list[int]] = {}
    for j in range(head, other_end):
        positions.setdefault(other[j], []).append(j)
    last = seq_end - 1
    taken: set[int] = set()
    mapped: list[int] = []
    words: list[str] = []
    for i in range(head, seq_end):
        token = seq[i]
        slots = [j for j in positions.get(token, ()) if j not in taken]
        if not slots:
            continue
        if len(slots) == 1:
            slot = slots[0]
        else:
            # A repeated word ("the", "credit") goes to the free occurrence whose neighbours
            # match its own: "the French Revolution" to "the French Revolution", not "the sans".
            before = seq[i - 1] if i else None
            after = seq[i + 1] if i < last else None
            slot = max(slots, key=lambda j: (j > 0 and other[j - 1] == before) + (j + 1 < other_end and other[j + 1] == after))
        taken.add(slot)
        mapped.append(slot)
        words.append(token)
    if all(x < y for x, y in zip(mapped, mapped[1:])):
        return None
    # Maximal runs that stay together ("blocks"), by the rank of each shared word in `b`.
    rank_of = {m: r for r, m in enumerate(sorted(mapped))}
    rank = [rank_of[m] for m in mapped]
    blocks: list[list[int]] = [[0]]
    for i in range(1, len(rank)):
        if rank[i] == rank[i - 1] + 1:
            blocks[-1].append(i)
        else:
            blocks.append([i])
    if len(blocks) > 6:
        return "order changed"
    firsts = sorted(rank[block[0]] for block in blocks)
    block_rank = [firsts.index(rank[block[0]]) for block in blocks]
    # One block moved elsewhere: removing it leaves the rest in order.
    for i in range(len(block_rank)):
        rest = block_rank[:i] + block_rank[i + 1 :]
        if all(x < y for x, y in zip(rest, rest[1:])):
            return None
    # Two blocks swapped across a coordinator ("brown rice or white rice").
    for i in range(len(block_rank)):
        for j in range(i + 2, len(block_rank)):
            swapped = list(block_rank)
            swapped[i], swapped[j] = swapped[j], swapped[i]
            if all(x < y for x, y in zip(swapped, swapped[1:])) and any(
                words[k] in _COORDINATORS for block in blocks[i + 1 : j] for k in block
            ):
                return None
    return "order changed"
