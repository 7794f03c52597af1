"""Factual QA over the knowledge table: single turn, JSON-formatted, and two-turn follow-ups.

GT by construction: the answer entity is the super-GT span (level 2, factual); the question's
subject, when the answer repeats it, is GT (level 1, factual). In JSON answers the keys and the
closing brace are structural GT and the values factual. Everything else is explanatory prose.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cherry_mlx.data.synth.knowledge import (
    COUNTRIES,
    ELEMENTS,
    EVENTS,
    KOREAN_CITIES,
    PLANETS,
    WRONG_CAPITALS,
)
from cherry_mlx.data.synth.prose import EXPLAIN, INTRO, OUTRO, SYSTEM
from cherry_mlx.data.synth.spans import Response, example


@dataclass(frozen=True)
class Fact:
    """One askable fact. ``qid`` names its subject: every fact about one subject shares it, so a
    two-turn dialogue about a subject never straddles two splits."""

    qid: str
    kind: str
    subj: tuple  # (ko, en)
    ans: tuple  # (ko, en)
    wrong: tuple  # (ko, en) plausible wrong answer, used by the self-correction family


def _slug(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


def all_facts() -> list[Fact]:
    """Every fact in the table, in a fixed order (the build is deterministic)."""
    facts = []
    caps = [(c[2], c[3]) for c in COUNTRIES]
    for i, c in enumerate(COUNTRIES):
        q = f"country.{_slug(c[1])}"
        wrong_cap = WRONG_CAPITALS.get(c[1], caps[(i + 7) % len(caps)])
        facts.append(Fact(q, "capital", (c[0], c[1]), (c[2], c[3]), wrong_cap))
        if c[4]:
            other = next(o for o in COUNTRIES[i + 1 :] + COUNTRIES if o[4] and o[4] != c[4])
            facts.append(Fact(q, "continent", (c[0], c[1]), (c[4], c[5]), (other[4], other[5])))
        other = next(o for o in COUNTRIES[i + 1 :] + COUNTRIES if o[6] != c[6])
        facts.append(Fact(q, "currency", (c[0], c[1]), (c[6], c[7]), (other[6], other[7])))
        if c[8]:
            other = next(o for o in COUNTRIES[i + 1 :] + COUNTRIES if o[8] and o[8] != c[8])
            facts.append(Fact(q, "language", (c[0], c[1]), (c[8], c[9]), (other[8], other[9])))
    for i, (z, sym, ko, en) in enumerate(ELEMENTS):
        q = f"element.{sym.lower()}"
        o = ELEMENTS[(i + 3) % len(ELEMENTS)]
        facts.append(Fact(q, "symbol", (ko, en), (sym, sym), (o[1], o[1])))
        facts.append(Fact(q, "number", (ko, en), (str(z), str(z)), (str(z + 1), str(z + 1))))
    for i, (key, ko, en, year) in enumerate(EVENTS):
        w = str(year + (1 if i % 2 else -1) * (1 + i % 9))
        facts.append(Fact(f"event.{key}", "year", (ko, en), (str(year), str(year)), (w, w)))
    for i, (cko, cen, pko, pen) in enumerate(KOREAN_CITIES):
        o = next(c for c in KOREAN_CITIES[i + 1 :] + KOREAN_CITIES if c[2] != pko)
        facts.append(Fact(f"city.{_slug(cen)}", "province", (cko, cen), (pko, pen), (o[2], o[3])))
    for n, ko, en in PLANETS:
        o = PLANETS[n % len(PLANETS)]
        facts.append(
            Fact(f"planet.{n}", "planet", (ko, en), (str(n), str(n)), (str(o[0]), str(o[0])))
        )
    return facts


_ORD = {
    1: "first",
    2: "second",
    3: "third",
    4: "fourth",
    5: "fifth",
    6: "sixth",
    7: "seventh",
    8: "eighth",
}

# Questions: {s} is the subject. Answer sentences: {s} subject (GT 1), {a} answer (super-GT).
QUESTIONS = {
    "capital": {
        "ko": [
            "{s:의} 수도는 어디인가요?",
            "{s} 수도가 어디야?",
            "{s:의} 수도를 알려 주세요.",
            "{s:의} 수도가 궁금합니다.",
        ],
        "en": [
            "What is the capital of {s}?",
            "Which city is the capital of {s}?",
            "Tell me the capital of {s}.",
            "What's the capital city of {s}?",
        ],
    },
    "continent": {
        "ko": [
            "{s:은는} 어느 대륙에 있나요?",
            "{s:은는} 어느 대륙에 속해?",
            "{s:이가} 있는 대륙을 알려 주세요.",
        ],
        "en": [
            "On which continent is {s}?",
            "Which continent is {s} in?",
            "Tell me the continent where {s} lies.",
        ],
    },
    "currency": {
        "ko": [
            "{s:의} 화폐 단위는 무엇인가요?",
            "{s:에서는} 어떤 돈을 써?",
            "{s:의} 통화를 알려 주세요.",
        ],
        "en": [
            "What currency is used in {s}?",
            "What is the currency of {s}?",
            "Which money do people pay with in {s}?",
        ],
    },
    "language": {
        "ko": ["{s:의} 공용어는 무엇인가요?", "{s:에서는} 어떤 언어를 공식적으로 쓰나요?"],
        "en": ["What is the official language of {s}?", "Which language is official in {s}?"],
    },
    "symbol": {
        "ko": ["{s:의} 원소 기호는 무엇인가요?", "{s} 원소 기호가 뭐야?"],
        "en": ["What is the chemical symbol for {s}?", "Which symbol stands for {s}?"],
    },
    "number": {
        "ko": ["{s:의} 원자 번호는 몇 번인가요?", "{s:은는} 원자 번호가 몇이야?"],
        "en": ["What is the atomic number of {s}?", "Which atomic number does {s} have?"],
    },
    "year": {
        "ko": ["{s:은는} 몇 년에 일어났나요?", "{s:이가} 언제였는지 연도를 알려 주세요."],
        "en": ["In what year did {s} take place?", "When was {s}? Give me the year."],
    },
    "province": {
        "ko": ["{s:은는} 어느 도에 있나요?", "{s:이가} 속한 도는 어디인가요?"],
        "en": ["Which province is {s} in?", "In which Korean province is {s}?"],
    },
    "planet": {
        "ko": ["{s:은는} 태양에서 몇 번째 행성인가요?", "{s:은는} 태양계에서 몇 번째 행성이야?"],
        "en": [
            "Counting from the Sun, which planet is {s}?",
            "What is the position of {s} among the planets, counted from the Sun?",
        ],
    },
}

ANSWERS = {
    "capital": {
        "ko": [
            "{s:의} 수도는 {a}입니다.",
            "수도는 {a}입니다.",
            "정답은 {a}입니다.",
            "{a:이가} 수도입니다.",
        ],
        "en": [
            "The capital of {s} is {a}.",
            "The capital is {a}.",
            "The answer is {a}.",
            "It is {a}.",
        ],
    },
    "continent": {
        "ko": ["{s:은는} {a}에 있습니다.", "{a}에 속한 나라입니다.", "정답은 {a}입니다."],
        "en": ["{s} is in {a}.", "It lies in {a}.", "The answer is {a}."],
    },
    "currency": {
        "ko": ["{s:은는} {a:을를} 사용합니다.", "화폐 단위는 {a}입니다.", "정답은 {a}입니다."],
        "en": ["{s} uses the {a}.", "The currency is the {a}.", "People pay in {a}."],
    },
    "language": {
        "ko": ["{s:의} 공용어는 {a}입니다.", "공용어는 {a}입니다."],
        "en": ["The official language of {s} is {a}.", "The official language is {a}."],
    },
    "symbol": {
        "ko": ["{s:의} 원소 기호는 {a}입니다.", "원소 기호는 {a}입니다."],
        "en": ["The symbol for {s} is {a}.", "Its symbol is {a}."],
    },
    "number": {
        "ko": ["{s:의} 원자 번호는 {a}번입니다.", "원자 번호는 {a}번입니다."],
        "en": ["The atomic number of {s} is {a}.", "Its atomic number is {a}."],
    },
    "year": {
        "ko": ["{s:은는} {a}년의 일입니다.", "{a}년에 일어났습니다.", "정답은 {a}년입니다."],
        "en": ["{s} took place in {a}.", "It happened in {a}.", "The year was {a}."],
    },
    "province": {
        "ko": ["{s:은는} {a}에 있습니다.", "{a}에 속한 도시입니다.", "정답은 {a}입니다."],
        "en": ["{s} is in {a}.", "It belongs to {a}.", "The answer is {a}."],
    },
    "planet": {
        "ko": ["{s:은는} 태양에서 {a}번째 행성입니다.", "태양에서 {a}번째 행성입니다."],
        "en": ["{s} is planet number {a} from the Sun.", "It is number {a} from the Sun."],
    },
}

JSON_KEYS = {  # (subject key, answer key) in JSON answers
    "capital": ("country", "capital"),
    "continent": ("country", "continent"),
    "currency": ("country", "currency"),
    "language": ("country", "language"),
    "symbol": ("element", "symbol"),
    "number": ("element", "atomic_number"),
    "year": ("event", "year"),
    "province": ("city", "province"),
    "planet": ("planet", "position"),
}

FOLLOW_UP = {
    "ko": ["그럼 ", "그러면 ", "고마워요. 그럼 ", "하나 더요. "],
    "en": ["And ", "Thanks. ", "One more: ", "Also, "],
}


def _subj(fact: Fact, lang: str, initial: bool) -> str:
    """The subject's name, capitalised when an English sentence starts with it."""
    s = fact.subj[0 if lang == "ko" else 1]
    return s[0].upper() + s[1:] if lang == "en" and initial else s


def question(fact: Fact, lang: str, rng: random.Random) -> str:
    """A user question about ``fact`` (no GT: prompts are never supervised)."""
    tmpl = rng.choice(QUESTIONS[fact.kind][lang])
    return Response().fill(tmpl, s=fact.subj[0 if lang == "ko" else 1]).message()["content"]


def answer_sentence(
    r: Response,
    fact: Fact,
    lang: str,
    rng: random.Random,
    level: int = 2,
    category: str = "factual",
    with_subject: bool = False,
) -> None:
    """The sentence that states the answer, with its GT spans."""
    tmpls = ANSWERS[fact.kind][lang]
    tmpl = rng.choice([t for t in tmpls if "{s" in t] if with_subject else tmpls)
    subj = _subj(fact, lang, tmpl.startswith("{s"))
    r.fill(tmpl, s=(subj, "factual", 1), a=(fact.ans[0 if lang == "ko" else 1], category, level))


def related(fact: Fact, rng: random.Random) -> Fact | None:
    """Another fact about the same subject, which a real answer often adds in passing."""
    others = [f for f in _by_subject().get(fact.qid, []) if f.kind != fact.kind]
    return rng.choice(others) if others else None


def explained_answer(fact: Fact, lang: str, rng: random.Random) -> Response:
    """Maybe an intro, the answer sentence, maybe a related fact (GT level 1), background
    prose before or after, maybe an outro."""
    r = Response()
    if rng.random() < 0.8:
        r.add(rng.choice(INTRO[lang]))
    sents = rng.sample(EXPLAIN[fact.kind][lang], k=rng.choice([1, 2, 2]))
    before = rng.random() < 0.4
    if before:
        r.add(sents.pop(0) + " ")
    answer_sentence(r, fact, lang, rng)
    other = related(fact, rng) if rng.random() < 0.3 else None
    if other is not None:
        r.add(" " + {"ko": "참고로 ", "en": "Also, "}[lang] if rng.random() < 0.5 else " ")
        answer_sentence(r, other, lang, rng, level=1, with_subject=True)
    if sents:
        r.add(" " + " ".join(sents))
    if rng.random() < 0.7:
        r.add(rng.choice(OUTRO[lang]))
    return r


_SUBJECTS: dict = {}


def _by_subject() -> dict:
    if not _SUBJECTS:
        for f in all_facts():
            _SUBJECTS.setdefault(f.qid, []).append(f)
    return _SUBJECTS


def _maybe_system(lang: str, rng: random.Random, p: float = 0.3) -> list:
    return [{"role": "system", "content": rng.choice(SYSTEM[lang])}] if rng.random() < p else []


def gen_factual(rng: random.Random, n: int) -> list[dict]:
    """Single-turn factual QA."""
    facts = all_facts()
    out = []
    for _ in range(n):
        fact, lang = rng.choice(facts), rng.choice(["ko", "ko", "en"])
        msgs = _maybe_system(lang, rng) + [{"role": "user", "content": question(fact, lang, rng)}]
        msgs.append(explained_answer(fact, lang, rng).message())
        out.append(example("factual", fact.qid, lang, msgs))
    return out


def json_answer(fact: Fact, lang: str, rng: random.Random) -> Response:
    """A JSON-formatted answer: keys and closing brace structural, values factual."""
    i = 0 if lang == "ko" else 1
    ks, ka = JSON_KEYS[fact.kind]
    r = Response()
    if rng.random() < 0.5:
        r.add(rng.choice(INTRO[lang]))
    r.add(
        rng.choice(
            {
                "ko": [
                    "요청하신 형식으로 정리했습니다.\n",
                    "JSON으로 답변드립니다.\n",
                    "아래와 같이 정리할 수 있습니다.\n",
                ],
                "en": [
                    "Here is the answer in the requested format.\n",
                    "Formatted as JSON:\n",
                    "Here it is:\n",
                ],
            }[lang]
        )
    )
    r.add('{"').gt(ks, "structural").add('": "').gt(fact.subj[i], "factual").add('", "')
    r.gt(ka, "structural").add('": ')
    numeric = fact.ans[i].isdigit()
    r.add("" if numeric else '"').gt(fact.ans[i], "factual", 2).add("" if numeric else '"')
    r.gt("}", "structural")
    r.add(
        rng.choice(
            {
                "ko": [
                    "\n필요하면 다른 항목도 같은 형식으로 추가할 수 있습니다.",
                    "\n값은 문자열과 숫자 형식을 그대로 유지했습니다.",
                    "\n이 객체는 그대로 파싱해서 프로그램에서 쓸 수 있습니다.",
                ],
                "en": [
                    "\nMore fields can be added in the same shape if needed.",
                    "\nThe values keep their natural string or number types.",
                    "\nThe object can be parsed as it is by any JSON library.",
                ],
            }[lang]
        )
    )
    r.add(" " + rng.choice(EXPLAIN[fact.kind][lang]))
    return r


def gen_json(rng: random.Random, n: int) -> list[dict]:
    """Factual questions that ask for a JSON object (structured output)."""
    facts = all_facts()
    ask = {
        "ko": [" JSON 형식으로 답해 주세요.", " 답을 JSON 객체로 주세요."],
        "en": [" Answer in JSON.", " Reply with a JSON object."],
    }
    out = []
    for _ in range(n):
        fact, lang = rng.choice(facts), rng.choice(["ko", "en"])
        msgs = [{"role": "user", "content": question(fact, lang, rng) + rng.choice(ask[lang])}]
        msgs.append(json_answer(fact, lang, rng).message())
        out.append(example("json", fact.qid, lang, msgs))
    return out


def gen_multiturn(rng: random.Random, n: int) -> list[dict]:
    """Two user turns about one subject; both assistant turns are supervised."""
    by_subject = _by_subject()
    subjects = [q for q, fs in by_subject.items() if len(fs) > 1]
    out = []
    for _ in range(n):
        f1, f2 = rng.sample(by_subject[rng.choice(subjects)], 2)
        lang = rng.choice(["ko", "en"])
        msgs = _maybe_system(lang, rng)
        msgs.append({"role": "user", "content": question(f1, lang, rng)})
        msgs.append(explained_answer(f1, lang, rng).message())
        lead, q2 = rng.choice(FOLLOW_UP[lang]), question(f2, lang, rng)
        follow = lead + (q2[0].lower() + q2[1:] if lead in ("And ", "Also, ") else q2)
        msgs.append({"role": "user", "content": follow})
        r = Response()
        answer_sentence(r, f2, lang, rng)
        r.add(" " + " ".join(rng.sample(EXPLAIN[f2.kind][lang], k=rng.choice([1, 2]))))
        msgs.append(r.message())
        out.append(example("multiturn", f1.qid, lang, msgs))
    return out
