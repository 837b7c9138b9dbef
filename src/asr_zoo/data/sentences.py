"""Deterministic English sentences for the synthetic corpus.

A few hundred common words (names, people, animals, things, places, verbs, adjectives, colours,
adverbs, number words, days and months) are combined by a small grammar with agreement
(``HE WALKS`` / ``THEY WALK``, ``A`` / ``AN``, ``WAS`` / ``WERE``): statements, modal and negated
clauses, questions, commands, reported speech and clauses joined by conjunctions. Lengths
spread evenly over 5-18 words; sentences are upper-case and hold only letters, apostrophes and
single spaces, like LibriSpeech transcripts. Words are chosen so that espeak-ng reads them one
way only: no digits, abbreviations or heteronyms (``READ``, ``LIVE``, ``CLOSE``, ``WIND``...).

>>> generate_sentences(2, seed=0) == generate_sentences(2, seed=0)
True
"""

from __future__ import annotations

import random
from typing import NamedTuple

__all__ = ["GENERATOR_VERSION", "MIN_WORDS", "MAX_WORDS", "vocabulary", "word_families", "generate_sentences"]

GENERATOR_VERSION = 1
"""Bumped whenever a change alters the sentences produced for a given seed."""

MIN_WORDS, MAX_WORDS = 5, 18


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Nouns are "SINGULAR" (plural adds S) or "SINGULAR/PLURAL".
_NAMES = _words("""
    JOHN MARY PETER SARAH DAVID EMMA JAMES ANNA ROBERT LUCY THOMAS HELEN GEORGE ALICE HENRY KATE
    SAMUEL LAURA DANIEL GRACE MICHAEL SUSAN EDWARD RACHEL FRANK EMILY OLIVER MARTHA CHARLES JANE
    WILLIAM CLARA ARTHUR NANCY PAUL RUTH SIMON JULIA VICTOR ROSE""")
_PEOPLE = _words("""
    MAN/MEN WOMAN/WOMEN CHILD/CHILDREN BOY GIRL TEACHER DOCTOR FARMER SAILOR DRIVER BAKER SINGER
    PAINTER NURSE SOLDIER STUDENT NEIGHBOUR GUEST KING QUEEN PRINCE/PRINCES PRINCESS/PRINCESSES
    FISHERMAN/FISHERMEN WAITER CAPTAIN STRANGER FRIEND BROTHER SISTER MOTHER FATHER UNCLE AUNT
    GRANDMOTHER GRANDFATHER GARDENER LAWYER ARTIST PILOT MERCHANT""")
_ANIMALS = _words("""
    DOG CAT HORSE COW SHEEP/SHEEP BIRD RABBIT FOX/FOXES DUCK GOOSE/GEESE MOUSE/MICE PIG GOAT LION
    TIGER BEAR WOLF/WOLVES OWL FROG DONKEY SQUIRREL TURTLE ELEPHANT MONKEY""")
_THINGS = _words("""
    BOOK BOX/BOXES LETTER KEY CUP BOTTLE BASKET CHAIR TABLE LAMP CLOCK WINDOW DOOR HAT COAT SHOE
    BAG BALL BOAT CAR BICYCLE TICKET MAP PICTURE PAINTING CANDLE BLANKET PILLOW MIRROR PENCIL
    NEWSPAPER MAGAZINE RADIO CAMERA GUITAR PIANO VIOLIN DRUM APPLE ORANGE BANANA LEMON CAKE
    SANDWICH/SANDWICHES FLOWER STONE SHELL FEATHER LADDER BUCKET HAMMER KNIFE/KNIVES SPOON PLATE
    GLASS/GLASSES JAR RING NECKLACE UMBRELLA TENT ROPE WHEEL ENVELOPE PARCEL GIFT TOY KITE
    BRUSH/BRUSHES COIN SCARF/SCARVES GLOVE BOOT JACKET SHIRT POT KETTLE LOAF/LOAVES EGG
    POTATO/POTATOES CARROT PEAR PEACH/PEACHES CHERRY/CHERRIES MELON PIE""")
_PLACES = _words("""
    KITCHEN GARDEN MARKET STATION LIBRARY SCHOOL CHURCH HOSPITAL BRIDGE RIVER FOREST FIELD VILLAGE
    CASTLE FARM BEACH LAKE HILL MOUNTAIN ISLAND VALLEY BAKERY MUSEUM THEATRE OFFICE FACTORY HOTEL
    PARK SQUARE CORNER HALL CELLAR ATTIC BARN ROOF STREET TOWER PALACE HARBOUR SHORE MEADOW CITY
    TOWN CAVE CHAPEL PORCH STABLE""")
_AT_PLACE = _words("IN AT NEAR BEHIND BESIDE OUTSIDE")
_TO_PLACE = _words("TO TOWARDS ACROSS THROUGH PAST AROUND FROM")

_ADJ_ANY = _words("OLD BIG SMALL LITTLE LARGE STRANGE FAMOUS BEAUTIFUL UGLY CLEAN DIRTY NEW WET DRY")
_ADJ_LIVING = _words("""
    YOUNG TALL HAPPY SAD ANGRY TIRED HUNGRY BRAVE CLEVER KIND GENTLE QUIET LOUD FRIENDLY LAZY BUSY
    PROUD POOR RICH CAREFUL CURIOUS NERVOUS CALM WILD LUCKY LONELY SILLY POLITE SERIOUS STRONG
    WEAK FOOLISH WISE""")
_ADJ_THING = _words("""
    HEAVY WARM COLD SOFT HARD SHINY BROKEN WOODEN EMPTY FULL FRESH SWEET ROUND SMOOTH ROUGH
    ANCIENT MODERN PRECIOUS SIMPLE SPECIAL PERFECT""")
_COLOURS = _words("RED BLUE GREEN YELLOW WHITE BLACK BROWN GREY PINK PURPLE GOLDEN SILVER")
_DEGREE = _words("VERY QUITE RATHER SO TOO REALLY")
_MANNER = _words("""
    SLOWLY QUICKLY QUIETLY LOUDLY CAREFULLY HAPPILY SADLY GENTLY SUDDENLY PATIENTLY NERVOUSLY
    PROUDLY EASILY CALMLY BRAVELY POLITELY SOFTLY EAGERLY SILENTLY SAFELY""")
_FREQUENCY = _words("ALWAYS OFTEN SOMETIMES NEVER USUALLY RARELY")
_NUMBERS = _words("""
    TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE FIFTEEN TWENTY THIRTY FORTY FIFTY""")
_DAYS = _words("MONDAY TUESDAY WEDNESDAY THURSDAY FRIDAY SATURDAY SUNDAY")
_MONTHS = _words("""
    JANUARY FEBRUARY MARCH APRIL JUNE JULY AUGUST SEPTEMBER OCTOBER NOVEMBER DECEMBER""")
_SEASONS = _words("SUMMER AUTUMN WINTER")
_PAST_TIMES = ("YESTERDAY", "LAST NIGHT", "LAST WEEK", "THIS MORNING", "EARLY THIS MORNING",
               "AFTER DINNER", "BEFORE BREAKFAST", "A LONG TIME AGO", "ONE EVENING",
               "LATER THAT DAY", "THE DAY BEFORE")
_FUTURE_TIMES = ("TOMORROW", "NEXT WEEK", "TONIGHT", "SOON", "LATER TODAY", "THE DAY AFTER TOMORROW")

# Verbs are "BASE/PAST"; the third person singular present is derived from BASE.
_VERBS_THING = _words("""
    FIND/FOUND BUY/BOUGHT CARRY/CARRIED BRING/BROUGHT TAKE/TOOK HOLD/HELD DROP/DROPPED
    OPEN/OPENED PAINT/PAINTED CLEAN/CLEANED WASH/WASHED FIX/FIXED BREAK/BROKE SELL/SOLD HIDE/HID
    KEEP/KEPT LOSE/LOST WANT/WANTED NEED/NEEDED CHOOSE/CHOSE DRAW/DREW FILL/FILLED MOVE/MOVED
    PUSH/PUSHED PULL/PULLED THROW/THREW CATCH/CAUGHT SEND/SENT COUNT/COUNTED CHECK/CHECKED
    WRAP/WRAPPED COLLECT/COLLECTED MEND/MENDED TOUCH/TOUCHED BORROW/BORROWED STEAL/STOLE""")
_VERBS_LIVING = _words("""
    MEET/MET HELP/HELPED CALL/CALLED VISIT/VISITED THANK/THANKED ASK/ASKED WAKE/WOKE
    INVITE/INVITED GREET/GREETED TEACH/TAUGHT WARN/WARNED JOIN/JOINED MISS/MISSED TRUST/TRUSTED
    ANSWER/ANSWERED FEED/FED CHASE/CHASED""")
_VERBS_ANY = _words("""
    SEE/SAW WATCH/WATCHED FOLLOW/FOLLOWED REMEMBER/REMEMBERED NOTICE/NOTICED LIKE/LIKED
    LOVE/LOVED FORGET/FORGOT""")
_VERBS_MOTION = _words("""
    WALK/WALKED RUN/RAN HURRY/HURRIED DRIVE/DROVE TRAVEL/TRAVELLED RIDE/RODE SWIM/SWAM
    WANDER/WANDERED RETURN/RETURNED GO/WENT COME/CAME SAIL/SAILED FLY/FLEW""")
_VERBS_STILL = _words("""
    SLEEP/SLEPT SING/SANG DANCE/DANCED LAUGH/LAUGHED SMILE/SMILED WAIT/WAITED SIT/SAT STAND/STOOD
    WORK/WORKED PLAY/PLAYED CRY/CRIED SHOUT/SHOUTED WHISPER/WHISPERED JUMP/JUMPED REST/RESTED
    STAY/STAYED LISTEN/LISTENED""")
_REPORTING = _words("SAID THOUGHT KNEW HOPED FORGOT")
_MODALS = _words("WILL CAN MUST SHOULD MIGHT WOULD COULD")
_NEGATED_MODALS = ("WON'T", "CAN'T", "MUST NOT", "SHOULD NOT", "COULDN'T", "WOULD NOT")
_JOIN = _words("AND BUT SO BECAUSE WHILE WHEN BEFORE AFTER ALTHOUGH")
_PRONOUNS = {  # subject: (object form, third person singular, plural)
    "I": ("ME", False, False), "YOU": ("YOU", False, False), "HE": ("HIM", True, False),
    "SHE": ("HER", True, False), "WE": ("US", False, True), "THEY": ("THEM", False, True),
}
_POSSESSIVES = _words("MY YOUR HIS HER OUR THEIR")


class _Noun(NamedTuple):
    singular: str
    plural: str


class _Verb(NamedTuple):
    base: str
    third: str
    past: str


class _Phrase(NamedTuple):
    words: str
    singular: bool  # agrees with IS / WAS / WALKS
    person: str = ""  # the subject pronoun, when the phrase is one


def _noun(entry: str) -> _Noun:
    singular, _, plural = entry.partition("/")
    return _Noun(singular, plural or singular + "S")


def _verb(entry: str) -> _Verb:
    base, past = entry.split("/")
    if base.endswith(("S", "SH", "CH", "X", "O")):
        third = base + "ES"
    elif base.endswith("Y") and base[-2] not in "AEIOU":
        third = base[:-1] + "IES"
    else:
        third = base + "S"
    return _Verb(base, third, past)


_N_PEOPLE = [_noun(e) for e in _PEOPLE]
_N_ANIMALS = [_noun(e) for e in _ANIMALS]
_N_THINGS = [_noun(e) for e in _THINGS]
_N_PLACES = [_noun(e) for e in _PLACES]
_V_THING = [_verb(e) for e in _VERBS_THING]
_V_LIVING = [_verb(e) for e in _VERBS_LIVING]
_V_ANY = [_verb(e) for e in _VERBS_ANY]
_V_MOTION = [_verb(e) for e in _VERBS_MOTION]
_V_STILL = [_verb(e) for e in _VERBS_STILL]


def vocabulary() -> set[str]:
    """Every word the generator can emit (upper-case, apostrophes included)."""
    nouns = _N_PEOPLE + _N_ANIMALS + _N_THINGS
    verbs = _V_THING + _V_LIVING + _V_ANY + _V_MOTION + _V_STILL
    words = {w for n in nouns for w in n} | {w for v in verbs for w in v}
    words |= {n.singular for n in _N_PLACES} | {n + "'S" for n in _NAMES}
    for group in (_NAMES, _AT_PLACE, _TO_PLACE, _ADJ_ANY, _ADJ_LIVING, _ADJ_THING, _COLOURS,
                  _DEGREE, _MANNER, _FREQUENCY, _NUMBERS, _DAYS, _MONTHS, _SEASONS, _REPORTING,
                  _MODALS, _NEGATED_MODALS, _JOIN, _POSSESSIVES, _PAST_TIMES, _FUTURE_TIMES,
                  tuple(_PRONOUNS), tuple(o for o, _, _ in _PRONOUNS.values())):
        words |= {w for phrase in group for w in phrase.split()}
    words |= set(_words("""
        THE A AN THIS THAT THESE THOSE SOME MANY EVERY AM IS ARE WAS WERE LOOKED SEEMED FELT DID
        DIDN'T NOT NEVER DON'T PLEASE THERE WHERE WHEN WHY HOW WHO SO ON IN SUNDAYS MORNING
        EVENING WEEK"""))
    return words


def word_families() -> list[tuple[str, ...]]:
    """Content words a corpus can hold out of training, each with its forms: (singular, plural) of
    every person, animal and thing noun and (name, name's) of every name; sorted, no repeats."""
    families = {(n.singular, n.plural) for n in _N_PEOPLE + _N_ANIMALS + _N_THINGS if n.singular != n.plural}
    families |= {(n.singular,) for n in _N_PEOPLE + _N_ANIMALS + _N_THINGS if n.singular == n.plural}
    families |= {(name, name + "'S") for name in _NAMES}
    return sorted(families)


class _Grammar:
    """Random phrases and clauses drawn with one ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, seq):
        return self.rng.choice(seq)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def article(self, next_word: str) -> str:
        return "AN" if next_word[0] in "AEIOU" else "A"

    def noun_phrase(self, nouns: list[_Noun], adjectives: tuple[str, ...]) -> _Phrase:
        """THE OLD DOG / A RED BALL / THREE GREEN APPLES / MARY'S CAT / THOSE BOXES."""
        noun = self.pick(nouns)
        plural = self.chance(0.3)
        mods = []
        if self.chance(0.45):
            mods.append(self.pick(adjectives))
        if self.chance(0.2):
            mods.append(self.pick(_COLOURS))
        head = " ".join(mods + [noun.plural if plural else noun.singular])
        if plural:
            det = self.pick(("THE", "SOME", "MANY", "THESE", "THOSE", "NUMBER", "NUMBER", "POSS"))
        else:
            det = self.pick(("THE", "THE", "A", "THIS", "THAT", "EVERY", "POSS", "NAME"))
        if det == "NUMBER":
            det = self.pick(_NUMBERS)
        elif det == "POSS":
            det = self.pick(_POSSESSIVES)
        elif det == "NAME":
            det = self.pick(_NAMES) + "'S"
        elif det == "A":
            det = self.article(head)
        return _Phrase(f"{det} {head}", not plural)

    def living(self) -> _Phrase:
        """A person, an animal or a name."""
        if self.chance(0.3):
            return _Phrase(self.pick(_NAMES), True)
        nouns = _N_PEOPLE if self.chance(0.65) else _N_ANIMALS
        return self.noun_phrase(nouns, _ADJ_ANY + _ADJ_LIVING)

    def thing(self) -> _Phrase:
        return self.noun_phrase(_N_THINGS, _ADJ_ANY + _ADJ_THING)

    def subject(self) -> _Phrase:
        if self.chance(0.25):
            pronoun = self.pick(tuple(_PRONOUNS))
            return _Phrase(pronoun, _PRONOUNS[pronoun][1], pronoun)
        return self.living()

    def object_for(self, verb_group: str) -> str:
        if verb_group == "living" or (verb_group == "any" and self.chance(0.5)):
            if self.chance(0.2):
                return self.pick([o for o, _, _ in _PRONOUNS.values()])
            return self.living().words
        return self.thing().words

    def place(self, prepositions: tuple[str, ...] = _AT_PLACE) -> str:
        return f"{self.pick(prepositions)} THE {self.pick(_N_PLACES).singular}"

    def transitive(self) -> tuple[_Verb, str]:
        """A transitive verb and a fitting object."""
        group = self.pick(("thing", "thing", "living", "any"))
        verbs = {"thing": _V_THING, "living": _V_LIVING, "any": _V_ANY}[group]
        return self.pick(verbs), self.object_for(group)

    def predicate(self) -> tuple[_Verb, str]:
        """A verb and what follows it, for any clause shape."""
        kind = self.rng.random()
        if kind < 0.55:
            verb, rest = self.transitive()
            if self.chance(0.35):
                rest += " " + self.place()
        elif kind < 0.8:
            verb = self.pick(_V_MOTION)
            rest = self.place(_TO_PLACE)
        else:
            verb = self.pick(_V_STILL)
            rest = self.place() if self.chance(0.6) else ""
        if self.chance(0.25):
            rest = f"{rest} {self.pick(_MANNER)}"
        return verb, rest.strip()

    def be(self, subject: _Phrase, past: bool) -> str:
        if subject.person == "I":
            return "WAS" if past else "AM"
        if past:
            return "WAS" if subject.singular else "WERE"
        return "IS" if subject.singular else "ARE"

    def clause(self) -> str:
        """A declarative clause in one of several shapes."""
        shape = self.rng.random()
        subject = self.subject()
        if shape < 0.35:  # past tense, optional time
            verb, rest = self.predicate()
            time = self.pick(_PAST_TIMES) + " " if self.chance(0.25) else ""
            return f"{time}{subject.words} {verb.past} {rest}"
        if shape < 0.5:  # habitual present
            verb, rest = self.predicate()
            freq = self.pick(_FREQUENCY) + " " if self.chance(0.5) else ""
            form = verb.third if subject.singular else verb.base
            when = " " + self.pick(("EVERY MORNING", "EVERY EVENING", "ON SUNDAYS", "EVERY WEEK",
                                    f"IN THE {self.pick(_SEASONS)}")) if self.chance(0.3) else ""
            return f"{subject.words} {freq}{form} {rest}{when}"
        if shape < 0.65:  # modal, possibly negated, possibly with a future time
            verb, rest = self.predicate()
            modal = self.pick(_NEGATED_MODALS) if self.chance(0.3) else self.pick(_MODALS)
            time = " " + self.pick(_FUTURE_TIMES) if self.chance(0.25) else ""
            return f"{subject.words} {modal} {verb.base} {rest}{time}"
        if shape < 0.75:  # negated past
            verb, rest = self.predicate()
            neg = self.pick(("DIDN'T", "DID NOT", "NEVER"))
            form = verb.past if neg == "NEVER" else verb.base
            return f"{subject.words} {neg} {form} {rest}"
        if shape < 0.88:  # copula with an adjective
            past = self.chance(0.6)
            verb = self.be(subject, past) if self.chance(0.7) else self.pick(
                ("LOOKED", "SEEMED", "FELT"))
            degree = self.pick(_DEGREE) + " " if self.chance(0.5) else ""
            adjective = self.pick(_ADJ_LIVING)
            place = " " + self.place() if self.chance(0.3) else ""
            return f"{subject.words} {verb} {degree}{adjective}{place}"
        things = self.thing()  # existential
        verb = ("WAS" if things.singular else "WERE") if self.chance(0.6) else (
            "IS" if things.singular else "ARE")
        where = self.place() if self.chance(0.6) else (
            f"ON {self.pick(_DAYS)}" if self.chance(0.5) else f"IN {self.pick(_MONTHS)}")
        return f"THERE {verb} {things.words} {where}"

    def question(self) -> str:
        subject = self.subject()
        verb, rest = self.predicate()
        kind = self.rng.random()
        if kind < 0.35:
            aux = self.pick(("DID", "WILL", "CAN", "SHOULD", "COULD"))
            return f"{aux} {subject.words} {verb.base} {rest}"
        if kind < 0.7:
            wh = self.pick(("WHERE", "WHEN", "WHY", "HOW"))
            return f"{wh} DID {subject.words} {verb.base} {rest}"
        if kind < 0.85:
            return f"WHO {verb.past} {rest}"
        adjective = self.pick(_ADJ_LIVING)
        return f"WHY {self.be(subject, self.chance(0.5))} {subject.words} SO {adjective}"

    def command(self) -> str:
        verb, rest = self.predicate()
        please = "PLEASE " if self.chance(0.5) else ""
        neg = "DON'T " if self.chance(0.2) else ""
        return f"{please}{neg}{verb.base} {rest}"

    def sentence(self) -> str:
        kind = self.rng.random()
        if kind < 0.4:
            text = self.clause()
        elif kind < 0.65:
            text = f"{self.clause()} {self.pick(_JOIN)} {self.clause()}"
        elif kind < 0.75:
            text = f"{self.living().words} {self.pick(_REPORTING)} THAT {self.clause()}"
        elif kind < 0.9:
            text = self.question()
        else:
            text = self.command()
        return " ".join(text.split())


def generate_sentences(n: int, seed: int = 0) -> list[str]:
    """Return ``n`` distinct sentences, the same list for the same ``seed``.

    Args:
        n (int): number of sentences.
        seed (int): random seed; the output also depends on :data:`GENERATOR_VERSION`.

    Returns:
        sentences (list[str]): ``n`` distinct upper-case sentences of
        :data:`MIN_WORDS` to :data:`MAX_WORDS` words (letters, apostrophes, single spaces),
        lengths roughly uniform over that range.
    """
    rng = random.Random(seed)
    grammar = _Grammar(rng)
    sentences: list[str] = []
    seen: set[str] = set()
    while len(sentences) < n:
        # Draw the length first so that lengths spread evenly over the allowed range.
        target = rng.randint(MIN_WORDS, MAX_WORDS)
        while True:
            text = grammar.sentence()
            length = len(text.split())
            if abs(length - target) <= 1 and MIN_WORDS <= length <= MAX_WORDS and text not in seen:
                break
        seen.add(text)
        sentences.append(text)
    return sentences
