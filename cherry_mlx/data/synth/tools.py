"""Tool calls in JSON: a ``tools`` list, an assistant turn that calls one, the tool's result, and
the assistant's answer from it.

The call turn is an mlx-lm / OpenAI style ``tool_calls`` entry with empty ``content``, so the chat
template renders it in its tool-call markers (ours: ``<|spartan_tool|>...<|spartan_tool_end|>``)
and a model trained on it learns the format it must produce at chat time. The call's GT spans are
its ``gt`` list, offsets into the canonical call text ``{"name": ..., "arguments": {...}}`` that
the template renders (``cherry_mlx.data.jsonl.tool_call_text``).
GT by construction: schema keys, literal argument values and the closing braces are structural
GT; the invoked tool name is the super-GT span of the call (verification: the paper's Table 2
files tool-call invocations there). In the answer turn the value read from the result is the
super-GT factual span, other result values factual GT.
"""

from __future__ import annotations

import json
import random

from cherry_mlx.data.jsonl import tool_call_text
from cherry_mlx.data.synth.knowledge import COUNTRIES
from cherry_mlx.data.synth.prose import OUTRO
from cherry_mlx.data.synth.spans import Response, example, josa


def _tool(name: str, desc: str, props: dict, required: list) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": desc,
            "parameters": {"type": "object", "properties": props, "required": required},
        },
    }


TOOLS = {  # compact schemas: every token of the tools list costs context in the tiny preset
    "get_weather": _tool(
        "get_weather",
        "Current weather in a city.",
        {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        ["city"],
    ),
    "convert_currency": _tool(
        "convert_currency",
        "Convert money between ISO currencies.",
        {"amount": {"type": "number"}, "from": {"type": "string"}, "to": {"type": "string"}},
        ["amount", "from", "to"],
    ),
    "calculate": _tool(
        "calculate",
        "Evaluate arithmetic exactly.",
        {"expression": {"type": "string"}},
        ["expression"],
    ),
    "set_alarm": _tool(
        "set_alarm",
        "Set an alarm (HH:MM, 24-hour).",
        {"time": {"type": "string"}, "label": {"type": "string"}},
        ["time"],
    ),
}

CITIES = [(c[3], c[2]) for c in COUNTRIES if "D.C." not in c[3]]  # (en, ko) capitals
CURRENCIES = [
    ("USD", "달러", "US dollars"),
    ("EUR", "유로", "euros"),
    ("JPY", "엔", "yen"),
    ("GBP", "파운드", "pounds"),
]
CONDITIONS = [("맑음", "sunny"), ("흐림", "cloudy"), ("비", "rain"), ("눈", "snow")]
LABELS = [("기상", "wake up"), ("회의", "meeting"), ("운동", "workout"), ("약 먹기", "medicine")]


def call_spans(name: str, args: dict) -> Response:
    """The canonical call text with structural spans on keys, literal values and closing braces
    and the verification super-GT span on the tool name."""
    r = Response().add('{"').gt("name", "structural").add('": "').gt(name, "verification", 2)
    r.add('", "').gt("arguments", "structural").add('": {')
    for i, (k, v) in enumerate(args.items()):
        r.add(", " if i else "").add('"').gt(k, "structural").add('": ')
        if isinstance(v, str):
            r.add('"').gt(v, "structural").add('"')
        else:
            r.gt(json.dumps(v), "structural")
    return r.gt("}}", "structural")


def call_turn(name: str, args: dict) -> dict:
    """The assistant message that calls ``name``: one ``tool_calls`` entry carrying its spans."""
    call = {"type": "function", "function": {"name": name, "arguments": args}}
    r = call_spans(name, args)
    # the spans index the text the template renders; the values above need no JSON escaping
    assert "".join(r.parts) == tool_call_text(call), (r.parts, tool_call_text(call))
    return {"role": "assistant", "content": "", "tool_calls": [dict(call, gt=r.spans)]}


def _weather(rng, lang):
    en, ko = rng.choice(CITIES)
    temp, (cko, cen) = rng.randrange(-5, 33), rng.choice(CONDITIONS)
    user = (
        rng.choice([f"{ko} 날씨 어때?", f"지금 {ko} 날씨를 알려 주세요."])
        if lang == "ko"
        else rng.choice(
            [f"What's the weather like in {en}?", f"Tell me the current weather in {en}."]
        )
    )
    args = {"city": en, "unit": "celsius"}
    result = {"city": en, "temp_c": temp, "condition": cen}
    r = Response()
    if lang == "ko":
        r.fill(
            f"현재 {ko}의 기온은 {{t}}도이고, 날씨는 {{c}}입니다. ",
            t=(str(temp), "factual", 2),
            c=(cko, "factual", 1),
        )
        r.add(
            " ".join(
                rng.sample(
                    [
                        "외출하실 때 옷차림을 참고하세요.",
                        "날씨는 자주 바뀌니 나가기 전에 한 번 더 확인해 보세요.",
                        "조회한 시점의 정보라는 점도 기억해 주세요.",
                    ],
                    k=rng.choice([1, 2]),
                )
            )
        )
    else:
        r.fill(
            f"It is currently {{t}}°C in {en}, and conditions are {{c}}. ",
            t=(str(temp), "factual", 2),
            c=(cen, "factual", 1),
        )
        r.add(
            " ".join(
                rng.sample(
                    [
                        "Dress accordingly if you head out.",
                        "Weather changes quickly, so check again before you leave.",
                        "This is the reading at the time of the request.",
                    ],
                    k=1,
                )
            )
        )
    return user, "get_weather", args, result, r, f"weather.{en.lower().replace(' ', '')}"


def _currency(rng, lang):
    amount = rng.randrange(1, 50) * 10
    code, ko, en = rng.choice(CURRENCIES)
    rate = {"USD": 1380, "EUR": 1490, "JPY": 9, "GBP": 1740}[code] + rng.randrange(-20, 21)
    won = amount * rate
    user = (
        f"{josa(f'{amount}{ko}', '은는')} 원화로 얼마예요?"
        if lang == "ko"
        else f"How much is {amount} {en} in Korean won?"
    )
    args = {"amount": amount, "from": code, "to": "KRW"}
    result = {"amount": won, "currency": "KRW", "rate": rate}
    r = Response()
    if lang == "ko":
        r.fill(
            f"조회한 환율로 계산하면 {josa(f'{amount}{ko}', '은는')} 약 {{w}}원입니다. "
            "적용된 환율은 {r}원입니다. ",
            w=(f"{won:,}", "factual", 2),
            r=(f"{rate:,}", "factual", 1),
        )
        r.add(
            rng.choice(
                [
                    "실제 환전할 때는 수수료 때문에 금액이 조금 달라질 수 있습니다.",
                    "환율은 시시각각 변하니 거래 직전에 다시 확인하세요.",
                ]
            )
        )
    else:
        r.fill(
            f"At the current rate, {amount} {en} is about {{w}} won. The rate used was {{r}} won. ",
            w=(f"{won:,}", "factual", 2),
            r=(f"{rate:,}", "factual", 1),
        )
        r.add(
            rng.choice(
                [
                    "Banks add fees, so the amount you get may differ a little.",
                    "Rates move all the time, so check again before you exchange.",
                ]
            )
        )
    return user, "convert_currency", args, result, r, f"currency.{amount}-{code}"


def _calculate(rng, lang):
    a, b, c = rng.randrange(100, 999), rng.randrange(10, 99), rng.randrange(2, 9)
    expr = f"{a} * {b} + {c}"
    val = a * b + c
    user = (
        f"{a} 곱하기 {b} 더하기 {josa(str(c), '을를')} 정확히 계산해 줘."
        if lang == "ko"
        else f"Compute {a} times {b} plus {c} exactly."
    )
    r = Response()
    if lang == "ko":
        r.fill("계산기 도구로 확인한 결과 값은 {v}입니다. ", v=(f"{val:,}", "factual", 2))
        r.add(
            "큰 수의 곱셈은 직접 하면 실수하기 쉬워서 도구를 사용했습니다. 곱셈을 먼저 하고 "
            "덧셈을 나중에 하는 순서도 그대로 지켰습니다."
        )
    else:
        r.fill("The calculator returned {v}. ", v=(f"{val:,}", "factual", 2))
        r.add(
            "Multiplying large numbers by hand is error-prone, so I used the tool. It also "
            "applies the usual order: multiplication before addition."
        )
    return user, "calculate", {"expression": expr}, {"result": val}, r, f"calc.{a}-{b}-{c}"


def _alarm(rng, lang):
    hh, mm = rng.randrange(5, 23), rng.choice([0, 15, 30, 45])
    (lko, len_) = rng.choice(LABELS)
    t = f"{hh:02d}:{mm:02d}"
    when = f"{hh}시 {mm}분" if mm else f"{hh}시"
    user = (
        f"{when}에 {josa(lko, '으로')} 알람 맞춰 줘."
        if lang == "ko"
        else f"Set a {len_} alarm for {t}."
    )
    args = {"time": t, "label": lko if lang == "ko" else len_}
    r = Response()
    if lang == "ko":
        r.fill("알람을 {t}에 맞췄습니다. ", t=(t, "factual", 2))
        r.add("시간이 되면 알려 드릴게요. 알람을 바꾸거나 끄고 싶으면 언제든 말씀해 주세요.")
    else:
        r.fill("Done, the alarm is set for {t}. ", t=(t, "factual", 2))
        r.add(
            "I will remind you when it goes off. Tell me any time if you want to change or "
            "cancel it."
        )
    return user, "set_alarm", args, {"status": "ok", "time": t}, r, f"alarm.{hh}-{mm}-{len_[:4]}"


KINDS = (_weather, _currency, _calculate, _alarm)
LEAD = {
    "ko": [
        "도구로 조회한 결과를 알려 드릴게요. ",
        "확인해 봤습니다. ",
        "요청하신 내용을 처리했습니다. ",
    ],
    "en": [
        "Here is what the tool returned. ",
        "I checked it for you. ",
        "I have taken care of it. ",
    ],
}


def gen_tools(rng: random.Random, n: int) -> list[dict]:
    """Tool-call conversations: request, call, result, answer."""
    out = []
    for _ in range(n):
        lang = rng.choice(["ko", "en"])
        user, name, args, result, answer, qid = rng.choice(KINDS)(rng, lang)
        # Only the tool that is called is offered: with a second schema a quarter of these
        # conversations overflowed the tiny preset's 256-token context.
        offered = [name]
        if rng.random() < 0.8:
            answer.parts.insert(0, rng.choice(LEAD[lang]))  # shift the spans with it
            answer.spans = [
                dict(
                    sp,
                    start=sp["start"] + len(answer.parts[0]),
                    end=sp["end"] + len(answer.parts[0]),
                )
                for sp in answer.spans
            ]
            answer.length += len(answer.parts[0])
        answer.add(rng.choice(OUTRO[lang]))
        msgs = [
            {"role": "user", "content": user},
            call_turn(name, args),
            {"role": "tool", "name": name, "content": json.dumps(result, ensure_ascii=False)},
            answer.message(),
        ]
        out.append(example("tools", "tool." + qid, lang, msgs, [TOOLS[t] for t in offered]))
    return out
