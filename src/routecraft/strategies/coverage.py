"""Concept coverage for CommonGen (the ``commongen_coverage`` grader).

The gold is the comma-separated concept list ("report, wheelbarrow, drive, ..."); the score is the share of the
distinct concepts that occur in the generated sentence. The rule, exactly:

1. **Words**: the sentence is lower-cased and split into runs of letters (``[a-z]+``): punctuation, digits,
   apostrophes and hyphens separate words ("customer's" -> "customer", "s"; "skate-board" -> "skate", "board").
   Concepts are lower-cased and stripped; repeated concepts count once.
2. **A concept occurs** when one of the sentence's words is the concept itself or one of its inflected forms
   (:func:`inflections`): regular plural / third person ("dish" -> "dishes", "city" -> "cities", "leaf" ->
   "leaves"), past tense and participle ("report" -> "reported", "bake" -> "baked", "carry" -> "carried", "stop" ->
   "stopped"), gerund ("drive" -> "driving", "run" -> "running", "lie" -> "lying"), and the irregular forms of
   common English verbs and nouns ("drive" -> "drove", "driven"; "sell" -> "sold"; "child" -> "children"); an
   irregular verb gets no regular past ("see" -> not "seed"). A concept of several words occurs when its words
   occur consecutively, the last one possibly inflected.
3. **Not counted**: derived words and compounds ("driver", "reporter", "dishwasher", "skateboarding" for
   "skate"), a concept inside another word, comparatives ("bigger"), and synonyms. Part of speech is not
   considered ("saw" counts for "see"). The rules over-generate some non-words ("photoes", "childs"); those
   cannot match a real sentence wrongly, which is why forms are generated from the concept rather than stemmed
   from the sentence (a suffix-stripping stemmer, as LLMRouter's own evaluation uses, maps "reporter" and
   "reported" alike to "report").
4. **A list is not a sentence**: a prediction whose words are all concept words or list glue ("and", "or") scores 0
   (``reject_lists``), so that echoing the concept list back does not score full coverage.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

_VOWELS = "aeiou"

#: irregular forms of common English verbs: base -> its past tense, participle and other irregular forms
IRREGULAR_VERBS: dict[str, tuple[str, ...]] = {
    "arise": ("arose", "arisen"), "awake": ("awoke", "awoken"), "bear": ("bore", "born", "borne"),
    "beat": ("beaten",), "become": ("became",), "begin": ("began", "begun"), "bend": ("bent",), "bet": (),
    "bind": ("bound",), "bite": ("bit", "bitten"), "bleed": ("bled",), "blow": ("blew", "blown"),
    "break": ("broke", "broken"), "breed": ("bred",), "bring": ("brought",), "build": ("built",),
    "burn": ("burnt",), "burst": (), "buy": ("bought",), "cast": (), "catch": ("caught",),
    "choose": ("chose", "chosen"), "cling": ("clung",), "come": ("came",), "cost": (), "creep": ("crept",),
    "cut": (), "deal": ("dealt",), "dig": ("dug",), "dive": ("dove",), "do": ("did", "done", "does"),
    "draw": ("drew", "drawn"), "dream": ("dreamt",), "drink": ("drank", "drunk"), "drive": ("drove", "driven"),
    "dwell": ("dwelt",), "eat": ("ate", "eaten"), "fall": ("fell", "fallen"), "feed": ("fed",), "feel": ("felt",),
    "fight": ("fought",), "find": ("found",), "flee": ("fled",), "fling": ("flung",), "fly": ("flew", "flown"),
    "forbid": ("forbade", "forbidden"), "forget": ("forgot", "forgotten"), "forgive": ("forgave", "forgiven"),
    "freeze": ("froze", "frozen"), "get": ("got", "gotten"), "give": ("gave", "given"),
    "go": ("went", "gone", "goes"), "grind": ("ground",), "grow": ("grew", "grown"), "hang": ("hung",),
    "have": ("has", "had"), "hear": ("heard",), "hide": ("hid", "hidden"), "hit": (), "hold": ("held",),
    "hurt": (), "keep": ("kept",), "kneel": ("knelt",), "knit": (), "know": ("knew", "known"), "lay": ("laid",),
    "lead": ("led",), "lean": ("leant",), "leap": ("leapt",), "learn": ("learnt",), "leave": ("left",),
    "lend": ("lent",), "let": (), "lie": ("lay", "lain"), "light": ("lit",), "lose": ("lost",),
    "make": ("made",), "mean": ("meant",), "meet": ("met",), "mistake": ("mistook", "mistaken"),
    "mow": ("mown",), "overcome": ("overcame",), "pay": ("paid",), "prove": ("proven",), "put": (), "quit": (),
    "read": (), "rid": (), "ride": ("rode", "ridden"), "ring": ("rang", "rung"), "rise": ("rose", "risen"),
    "run": ("ran",), "saw": ("sawn",), "say": ("said",), "see": ("saw", "seen"), "seek": ("sought",),
    "sell": ("sold",), "send": ("sent",), "set": (), "sew": ("sewn",), "shake": ("shook", "shaken"),
    "shear": ("shorn",), "shed": (), "shine": ("shone",), "shoot": ("shot",), "show": ("shown",),
    "shrink": ("shrank", "shrunk"), "shut": (), "sing": ("sang", "sung"), "sink": ("sank", "sunk"),
    "sit": ("sat",), "slay": ("slew", "slain"), "sleep": ("slept",), "slide": ("slid",), "sling": ("slung",),
    "slit": (), "smell": ("smelt",), "sow": ("sown",), "speak": ("spoke", "spoken"), "speed": ("sped",),
    "spell": ("spelt",), "spend": ("spent",), "spill": ("spilt",), "spin": ("spun",), "spit": ("spat",),
    "split": (), "spoil": ("spoilt",), "spread": (), "spring": ("sprang", "sprung"), "stand": ("stood",),
    "steal": ("stole", "stolen"), "stick": ("stuck",), "sting": ("stung",), "stink": ("stank", "stunk"),
    "stride": ("strode", "stridden"), "strike": ("struck", "stricken"), "string": ("strung",),
    "strive": ("strove", "striven"), "swear": ("swore", "sworn"), "sweep": ("swept",), "swell": ("swollen",),
    "swim": ("swam", "swum"), "swing": ("swung",), "take": ("took", "taken"), "teach": ("taught",),
    "tear": ("tore", "torn"), "tell": ("told",), "think": ("thought",), "throw": ("threw", "thrown"),
    "thrust": (), "tread": ("trod", "trodden"), "understand": ("understood",), "undo": ("undid", "undone"),
    "upset": (), "wake": ("woke", "woken"), "wear": ("wore", "worn"), "weave": ("wove", "woven"),
    "weep": ("wept",), "wet": (), "win": ("won",), "wind": ("wound",), "withdraw": ("withdrew", "withdrawn"),
    "wring": ("wrung",), "write": ("wrote", "written"),
}
#: irregular verbs whose regular past ("-ed") is also in use (burned/burnt, dived/dove, lied/lay, ...)
REGULAR_PAST_TOO = frozenset({
    "burn", "dive", "dream", "dwell", "hang", "kneel", "knit", "lean", "leap", "learn", "lie", "light", "mow",
    "prove", "saw", "sew", "shine", "show", "smell", "sow", "speed", "spell", "spill", "spoil", "strive", "swell",
    "wake", "weave", "wet", "bet", "quit"})
#: irregular plurals
IRREGULAR_NOUNS: dict[str, tuple[str, ...]] = {
    "man": ("men",), "woman": ("women",), "child": ("children",), "person": ("people",), "foot": ("feet",),
    "tooth": ("teeth",), "goose": ("geese",), "mouse": ("mice",), "louse": ("lice",), "ox": ("oxen",),
    "die": ("dice",), "cactus": ("cacti",), "fungus": ("fungi",), "octopus": ("octopi",),
}
#: words whose forms are listed in full (the regular rules would make real words of them: "be" -> "bed")
FULL_FORMS: dict[str, tuple[str, ...]] = {"be": ("be", "am", "is", "are", "was", "were", "been", "being")}

_GLUE = frozenset({"and", "or", "a", "an", "the"})


def _cvc(w: str) -> bool:
    """Ends consonant-vowel-consonant (not w/x/y): the final consonant may double before -ed/-ing ("stop")."""
    return len(w) >= 3 and w[-1] not in _VOWELS + "wxy" and w[-2] in _VOWELS and w[-3] not in _VOWELS


def _one_syllable(w: str) -> bool:
    return len(re.findall(r"[aeiouy]+", w)) == 1


def inflections(word: str) -> frozenset[str]:
    """The word and its inflected forms (see the module docstring); ``word`` is taken as a base form.

    Plural / third person: +s, or +es after s, x, z, ch, sh (both after o); consonant+y -> ies; f -> ves, fe -> ves.
    Gerund: +ing; e -> ing (not after ee/ye/oe); ie -> ying. Past: +ed; e -> ed (+d); consonant+y -> ied; only for
    verbs that are not irregular (or whose regular past is in use too). A one-syllable word ending
    consonant-vowel-consonant doubles its consonant (stop -> stopped, stopping; its undoubled forms would be other
    words: "car" -> "cared"); a longer one gets both (visited, admitted). -c -> cked, cking (picnic). Then the
    irregular forms.
    """
    w = word.strip().lower()
    if not w:
        return frozenset()
    if w in FULL_FORMS:
        return frozenset(FULL_FORMS[w])
    irregular_verb = w in IRREGULAR_VERBS
    past = not irregular_verb or w in REGULAR_PAST_TOO
    forms = {w}
    consonant_y = len(w) >= 2 and w.endswith("y") and w[-2] not in _VOWELS
    if w.endswith(("s", "x", "z", "ch", "sh")):
        forms.add(w + "es")
    elif consonant_y:  # carry -> carries (and carried, below)
        forms.add(w[:-1] + "ies")
    else:
        forms.add(w + "s")
        if w.endswith("o"):  # potato -> potatoes (photo -> photos)
            forms.add(w + "es")
    if w.endswith("fe"):  # knife -> knives
        forms.add(w[:-2] + "ves")
    elif w.endswith("f"):  # leaf -> leaves
        forms.add(w[:-1] + "ves")
    # gerund
    if w.endswith("ie"):  # lie -> lying
        forms.add(w[:-2] + "ying")
    elif w.endswith("e") and not w.endswith(("ee", "ye", "oe")):  # bake -> baking
        forms.add(w[:-1] + "ing")
    else:
        forms.add(w + "ing")
    # past tense and participle
    if past:
        if w.endswith("e"):
            forms.add(w + "d")
        elif consonant_y:
            forms.add(w[:-1] + "ied")
        else:
            forms.add(w + "ed")
    if _cvc(w):
        doubled = {w + w[-1] + "ing"} | ({w + w[-1] + "ed"} if past else set())
        if _one_syllable(w):
            forms -= {w + "ing", w + "ed"}
        forms |= doubled
    if w.endswith("c"):  # picnic -> picnicked, picnicking
        forms |= {w + "king"} | ({w + "ked"} if past else set())
    forms.update(IRREGULAR_VERBS.get(w, ()))
    forms.update(IRREGULAR_NOUNS.get(w, ()))
    return frozenset(forms)


def words(text: str) -> list[str]:
    """The words of ``text`` by the coverage rule: lower-cased runs of letters."""
    return re.findall(r"[a-z]+", str(text).lower())


def parse_concepts(gold: Any) -> list[str]:
    """The distinct concepts of a gold: a comma-separated string or a list of strings, in order."""
    if isinstance(gold, str):
        items: Iterable[Any] = gold.split(",")
    elif isinstance(gold, (list, tuple)):
        items = gold
    else:
        raise ValueError(f"commongen gold must be a comma-separated string or a list, got {gold!r}")
    out = list(dict.fromkeys(" ".join(words(c)) for c in items if str(c).strip()))
    out = [c for c in out if c]
    if not out:
        raise ValueError(f"commongen gold has no concepts: {gold!r}")
    return out


def concept_present(concept: str, tokens: list[str]) -> bool:
    parts = concept.split()
    if not parts:
        return False
    last = inflections(parts[-1])
    n = len(parts)
    for i in range(len(tokens) - n + 1):
        if tokens[i + n - 1] in last and tokens[i:i + n - 1] == parts[:-1]:
            return True
    return False


def coverage(prediction: Any, gold: Any, reject_lists: bool = True) -> tuple[float, list[str]]:
    """(score, the concepts not found) for a sentence and a concept list (see the module docstring)."""
    concepts = parse_concepts(gold)
    tokens = words("" if prediction is None else prediction)
    if reject_lists and tokens:
        concept_words = set().union(*(inflections(p) for c in concepts for p in c.split()))
        if all(t in concept_words or t in _GLUE for t in tokens):
            return 0.0, concepts
    missing = [c for c in concepts if not concept_present(c, tokens)]
    return 1.0 - len(missing) / len(concepts), missing


def commongen_coverage(prediction: Any, gold: Any, reject_lists: bool = True) -> float:
    """Share of the gold's concepts that occur in ``prediction`` (inflections counted; see the module docstring)."""
    return coverage(prediction, gold, reject_lists)[0]
