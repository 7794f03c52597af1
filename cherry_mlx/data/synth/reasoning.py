"""Arithmetic word problems and unit conversions answered step by step.

GT by construction: every intermediate result is reasoning GT (level 1), the entailment
connective that introduces the conclusion ("따라서", "So") is reasoning GT, and the final number
is the super-GT span (level 2, reasoning). Conversion factors are facts (factual GT). Operands
copied from the question and the explanation around them are not GT.
"""

from __future__ import annotations

import random

from cherry_mlx.data.synth.knowledge import UNITS
from cherry_mlx.data.synth.prose import INTRO, OUTRO
from cherry_mlx.data.synth.spans import Response, example, josa

ITEMS = [
    ("사과", "apple"),
    ("연필", "pencil"),
    ("공책", "notebook"),
    ("빵", "loaf of bread"),
    ("우유", "carton of milk"),
    ("지우개", "eraser"),
    ("귤", "tangerine"),
]

METHOD = {
    "ko": [
        "전체 값을 먼저 구한 다음 나머지를 계산하면 됩니다. ",
        "식을 세워서 한 단계씩 계산해 보겠습니다. ",
        "문제를 작은 단계로 나누어 풀어 볼게요. ",
    ],
    "en": [
        "Work out the total first and the rest follows. ",
        "Let me set up the calculation and go one step at a time. ",
        "Splitting the problem into small steps makes it easy. ",
    ],
}
CHECK = {
    "ko": [
        " 계산 결과를 거꾸로 확인해 보아도 맞습니다.",
        " 단위를 빠뜨리지 않도록 주의하세요.",
        "",
    ],
    "en": [" Working backwards gives the same result.", " Keep the units in mind.", ""],
}
SO = {"ko": ["따라서", "그러므로"], "en": ["So", "Therefore"]}


def _n(x: int) -> str:
    return f"{x:,}"


def _shop(rng, lang, r: Response):
    item = rng.choice(ITEMS)
    p, n = rng.randrange(3, 30) * 100, rng.randrange(2, 10)
    total = p * n
    paid = (total // 10000 + 1) * 10000 if rng.random() < 0.5 else (total // 5000 + 1) * 5000
    change = paid - total
    so = rng.choice(SO[lang])
    if lang == "ko":
        q = (
            f"{item[0]} 한 개에 {_n(p)}원입니다. {n}개를 사고 {_n(paid)}원을 냈다면 거스름돈은 "
            "얼마인가요?"
        )
        r.fill(
            f"먼저 전체 가격을 구합니다. {_n(p)} × {n} = {{t}}원입니다. 낸 돈에서 전체 가격을 "
            f"빼면 됩니다. {{so}} 거스름돈은 {_n(paid)} − {_n(total)} = {{c}}원입니다.",
            t=(_n(total), "reasoning", 1),
            so=(so, "reasoning", 1),
            c=(_n(change), "reasoning", 2),
        )
    else:
        q = (
            f"One {item[1]} costs {_n(p)} won. If you buy {n} and pay {_n(paid)} won, how much "
            "change do you get?"
        )
        r.fill(
            f"First find the total price: {_n(p)} × {n} = {{t}} won. Then subtract it from the "
            f"amount paid. {{so}} the change is {_n(paid)} − {_n(total)} = {{c}} won.",
            t=(_n(total), "reasoning", 1),
            so=(so, "reasoning", 1),
            c=(_n(change), "reasoning", 2),
        )
    return q, f"shop.{p}-{n}-{paid}"


def _travel(rng, lang, r: Response):
    v1, t1 = rng.randrange(4, 13) * 10, rng.randrange(1, 4)
    v2, t2 = rng.randrange(4, 13) * 10, rng.randrange(1, 4)
    d1, d2 = v1 * t1, v2 * t2
    so = rng.choice(SO[lang])
    if lang == "ko":
        q = (
            f"자동차가 시속 {v1}km로 {t1}시간 달린 뒤 시속 {v2}km로 {t2}시간 더 달렸습니다. "
            "모두 몇 km를 달렸나요?"
        )
        r.fill(
            f"처음 구간은 {v1} × {t1} = {{a}}km입니다. 다음 구간은 {v2} × {t2} = {{b}}km입니다. "
            f"{{so}} 전체 거리는 {d1} + {d2} = {{c}}km입니다.",
            a=(str(d1), "reasoning", 1),
            b=(str(d2), "reasoning", 1),
            so=(so, "reasoning", 1),
            c=(str(d1 + d2), "reasoning", 2),
        )
    else:
        q = (
            f"A car drives at {v1} km/h for {t1} hours and then at {v2} km/h for {t2} more "
            "hours. How far does it go in total?"
        )
        r.fill(
            f"The first leg is {v1} × {t1} = {{a}} km. The second leg is {v2} × {t2} = "
            f"{{b}} km. {{so}} the total distance is {d1} + {d2} = {{c}} km.",
            a=(str(d1), "reasoning", 1),
            b=(str(d2), "reasoning", 1),
            so=(so, "reasoning", 1),
            c=(str(d1 + d2), "reasoning", 2),
        )
    return q, f"travel.{v1}-{t1}-{v2}-{t2}"


def _average(rng, lang, r: Response):
    a, b = rng.randrange(60, 101), rng.randrange(60, 101)
    c = rng.randrange(62, 101)
    c -= (a + b + c) % 3  # make the sum divisible by 3
    s, so = a + b + c, rng.choice(SO[lang])
    if lang == "ko":
        q = f"세 과목 점수가 {a}점, {b}점, {c}점입니다. 평균 점수는 몇 점인가요?"
        r.fill(
            f"점수를 모두 더하면 {a} + {b} + {c} = {{s}}점입니다. 과목이 세 개이므로 3으로 "
            f"나눕니다. {{so}} 평균은 {s} ÷ 3 = {{m}}점입니다.",
            s=(str(s), "reasoning", 1),
            so=(so, "reasoning", 1),
            m=(str(s // 3), "reasoning", 2),
        )
    else:
        q = f"Three test scores are {a}, {b} and {c}. What is the average score?"
        r.fill(
            f"Adding the scores gives {a} + {b} + {c} = {{s}}. There are three tests, so divide "
            f"by 3. {{so}} the average is {s} ÷ 3 = {{m}}.",
            s=(str(s), "reasoning", 1),
            so=(so, "reasoning", 1),
            m=(str(s // 3), "reasoning", 2),
        )
    return q, f"average.{a}-{b}-{c}"


def _expr(rng, lang, r: Response):
    a, b, c = rng.randrange(2, 30), rng.randrange(2, 30), rng.randrange(2, 10)
    d = rng.randrange(1, (a + b) * c)
    s, p = a + b, (a + b) * c
    so = rng.choice(SO[lang])
    if lang == "ko":
        q = f"({a} + {b}) × {c} − {d}의 값은 얼마인가요?"
        r.fill(
            f"괄호 안을 먼저 계산합니다. {a} + {b} = {{s}}입니다. 그다음 곱셈을 하면 "
            f"{s} × {c} = {{p}}입니다. 마지막으로 뺄셈을 합니다. "
            f"{{so}} {p} − {d} = {{v}}입니다.",
            s=(str(s), "reasoning", 1),
            p=(str(p), "reasoning", 1),
            so=(so, "reasoning", 1),
            v=(str(p - d), "reasoning", 2),
        )
    else:
        q = f"What is ({a} + {b}) × {c} − {d}?"
        r.fill(
            f"Start inside the brackets: {a} + {b} = {{s}}. Then multiply: {s} × {c} = {{p}}. "
            f"Finally subtract. {{so}} {p} − {d} = {{v}}.",
            s=(str(s), "reasoning", 1),
            p=(str(p), "reasoning", 1),
            so=(so, "reasoning", 1),
            v=(str(p - d), "reasoning", 2),
        )
    return q, f"expr.{a}-{b}-{c}-{d}"


def _discount(rng, lang, r: Response):
    pct = rng.choice([10, 20, 25, 30, 40, 50])
    price = rng.randrange(2, 40) * 2000
    off = price * pct // 100
    so = rng.choice(SO[lang])
    if lang == "ko":
        q = f"{_n(price)}원짜리 물건을 {pct}% 할인받으면 얼마를 내야 하나요?"
        r.fill(
            f"할인 금액은 {_n(price)} × {pct}% = {{o}}원입니다. 원래 가격에서 할인 금액을 "
            f"뺍니다. {{so}} 내야 할 금액은 {_n(price)} − {_n(off)} = {{v}}원입니다.",
            o=(_n(off), "reasoning", 1),
            so=(so, "reasoning", 1),
            v=(_n(price - off), "reasoning", 2),
        )
    else:
        q = f"An item costs {_n(price)} won. How much do you pay with a {pct}% discount?"
        r.fill(
            f"The discount is {_n(price)} × {pct}% = {{o}} won. Subtract it from the original "
            f"price. {{so}} you pay {_n(price)} − {_n(off)} = {{v}} won.",
            o=(_n(off), "reasoning", 1),
            so=(so, "reasoning", 1),
            v=(_n(price - off), "reasoning", 2),
        )
    return q, f"discount.{price}-{pct}"


def _convert(rng, lang, r: Response):
    key, bko, ben, bens, f, sko, sen, sens = rng.choice(UNITS)
    x = rng.randrange(2, 13)
    if lang == "ko":
        q = f"{x}{josa(bko, '은는')} 몇 {sko}인가요?"
        r.fill(
            f"1{josa(bko, '은는')} {{f}}{sko}입니다. 그러므로 {x}에 {josa(_n(f), '을를')} "
            f"곱하면 됩니다. {x} × {_n(f)} = {{v}}{sko}입니다.",
            f=(_n(f), "factual", 1),
            v=(_n(x * f), "reasoning", 2),
        )
    else:
        q = f"How many {sens} are there in {x} {bens}?"
        r.fill(
            f"One {ben} is {{f}} {sens}. So multiply {x} by {_n(f)}: {x} × {_n(f)} = {{v}} {sens}.",
            f=(_n(f), "factual", 1),
            v=(_n(x * f), "reasoning", 2),
        )
    return q, f"convert.{key}-{x}"


def _clock(rng, lang, r: Response):
    h, m = rng.randrange(2, 10), rng.randrange(5, 60, 5)
    if lang == "ko":
        q = f"{h}시간 {m}분은 모두 몇 분인가요?"
        r.fill(
            f"1시간은 {{f}}분이므로 {h}시간은 {h} × 60 = {{a}}분입니다. 여기에 {m}분을 "
            f"더합니다. {{so}} {h * 60} + {m} = {{v}}분입니다.",
            f=("60", "factual", 1),
            a=(str(h * 60), "reasoning", 1),
            so=(rng.choice(SO[lang]), "reasoning", 1),
            v=(str(h * 60 + m), "reasoning", 2),
        )
    else:
        q = f"How many minutes are {h} hours and {m} minutes?"
        r.fill(
            f"An hour has {{f}} minutes, so {h} hours are {h} × 60 = {{a}} minutes. Add the "
            f"remaining {m} minutes. {{so}} {h * 60} + {m} = {{v}} minutes.",
            f=("60", "factual", 1),
            a=(str(h * 60), "reasoning", 1),
            so=(rng.choice(SO[lang]), "reasoning", 1),
            v=(str(h * 60 + m), "reasoning", 2),
        )
    return q, f"clock.{h}-{m}"


ARITHMETIC = (_shop, _travel, _average, _expr, _discount)
UNIT = (_convert, _clock)


def solved(kinds, rng: random.Random, lang: str) -> tuple[str, str, Response]:
    """(question, qid, worked answer) for a random problem of one of ``kinds``."""
    r = Response()
    if rng.random() < 0.4:
        r.add(rng.choice(INTRO[lang]))
    if rng.random() < 0.5:
        r.add(rng.choice(METHOD[lang]))
    q, qid = rng.choice(kinds)(rng, lang, r)
    if rng.random() < 0.6:
        r.add(rng.choice(CHECK[lang]))
    if rng.random() < 0.5:
        r.add(rng.choice(OUTRO[lang]))
    return q, "math." + qid, r


def gen_math(rng: random.Random, n: int, kinds=ARITHMETIC, family: str = "arithmetic"):
    """Step-by-step arithmetic (or, with ``kinds=UNIT``, unit conversion) examples."""
    out = []
    for _ in range(n):
        lang = rng.choice(["ko", "ko", "en"])
        q, qid, r = solved(kinds, rng, lang)
        msgs = [{"role": "user", "content": q}, r.message()]
        out.append(example(family, qid, lang, msgs))
    return out
