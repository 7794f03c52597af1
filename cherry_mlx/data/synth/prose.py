"""Explanatory, non-GT prose the generators wrap around GT spans.

Real answers are mostly connective explanation; a first prototype whose answers were nothing but
GT landed at a 45% GT share against the paper's ~15%. These sentences are deliberately free of
entities and numbers, so that leaving them untagged is correct under the paper's criteria (a
tagger that finds an entity here would be right, and the construction would be wrong).
"""

from __future__ import annotations

INTRO = {
    "ko": [
        "좋은 질문입니다. ",
        "간단히 정리해 드릴게요. ",
        "질문하신 내용을 차근차근 살펴보겠습니다. ",
        "헷갈리기 쉬운 부분이라 한 번에 정리해 보겠습니다. ",
        "네, 알려 드리겠습니다. ",
        "기본적인 내용부터 짚어 보겠습니다. ",
        "자주 나오는 질문이에요. ",
        "",
        "결론부터 말씀드리면 다음과 같습니다. ",
        "핵심만 간추려 설명드릴게요. ",
    ],
    "en": [
        "Good question. ",
        "Here is a short answer. ",
        "Let me walk through it step by step. ",
        "This one is easy to mix up, so let me be precise. ",
        "Sure, happy to help. ",
        "Let me start with the basics. ",
        "This comes up quite often. ",
        "",
        "The short version is below. ",
        "Here are the key points. ",
    ],
}

OUTRO = {
    "ko": [
        " 더 궁금한 점이 있으면 편하게 물어보세요.",
        " 도움이 되었으면 좋겠습니다.",
        " 다른 내용도 필요하시면 말씀해 주세요.",
        " 공부하실 때 참고하시면 좋겠습니다.",
        "",
        "",
        " 시험 준비에 도움이 되길 바랍니다.",
        " 관련해서 더 알고 싶은 부분이 있으면 알려 주세요.",
    ],
    "en": [
        " Feel free to ask if anything else is unclear.",
        " I hope this helps.",
        " Let me know if you need more detail.",
        " It is a useful fact to keep in mind.",
        "",
        "",
        " Good luck with your studies.",
        " Happy to explain any related topic as well.",
    ],
}

# Background sentences per kind of fact: true in general, with no entity of their own.
EXPLAIN = {
    "capital": {
        "ko": [
            "수도는 보통 정부와 주요 국가 기관이 자리한 도시를 말합니다.",
            "가장 큰 도시와 수도가 항상 같은 것은 아니라서 자주 헷갈립니다.",
            "수도에는 대개 의회와 행정부 같은 핵심 기관이 모여 있습니다.",
            "나라마다 수도가 정해진 역사적 배경이 조금씩 다릅니다.",
        ],
        "en": [
            "A capital is the city where the national government usually sits.",
            "The largest city is not always the capital, which is why people mix them up.",
            "Most capitals host the parliament and the main government offices.",
            "Each country chose its capital for its own historical reasons.",
        ],
    },
    "continent": {
        "ko": [
            "대륙은 지리적으로 나눈 큰 땅덩어리를 뜻합니다.",
            "지도에서 위치를 떠올려 보면 기억하기 쉽습니다.",
            "대륙 구분은 지리와 문화적 관습을 함께 반영합니다.",
        ],
        "en": [
            "Continents are the large land masses geographers use to divide the world.",
            "Picturing the country on a map makes this easy to remember.",
            "The usual division into continents mixes geography with convention.",
        ],
    },
    "currency": {
        "ko": [
            "화폐 단위는 그 나라에서 물건값을 매길 때 쓰는 기준입니다.",
            "여행을 가기 전에 환율과 함께 확인해 두면 편리합니다.",
            "같은 이름의 화폐라도 나라마다 가치가 다를 수 있습니다.",
        ],
        "en": [
            "A currency is the unit prices are quoted in within the country.",
            "It is worth checking the exchange rate before you travel.",
            "Currencies with the same name can differ in value from country to country.",
        ],
    },
    "language": {
        "ko": [
            "공용어는 정부와 공공 기관에서 공식적으로 쓰는 언어입니다.",
            "실제 생활에서는 여러 언어가 함께 쓰이기도 합니다.",
            "언어는 그 나라의 역사와 문화를 잘 보여 줍니다.",
        ],
        "en": [
            "An official language is the one used by the government and public services.",
            "In daily life several languages may be spoken side by side.",
            "A country's language reflects much of its history.",
        ],
    },
    "symbol": {
        "ko": [
            "원소 기호는 보통 원소 이름의 라틴어나 영어 철자에서 따옵니다.",
            "기호의 첫 글자는 대문자, 둘째 글자는 소문자로 씁니다.",
            "화학식을 읽을 때 원소 기호를 알면 훨씬 수월합니다.",
        ],
        "en": [
            "Chemical symbols usually come from the Latin or English name of the element.",
            "The first letter is a capital and any second letter is lower case.",
            "Knowing the symbols makes chemical formulas much easier to read.",
        ],
    },
    "number": {
        "ko": [
            "원자 번호는 원자핵 속 양성자의 수를 뜻합니다.",
            "주기율표는 원자 번호 순서대로 원소를 배열합니다.",
            "원자 번호가 같으면 같은 원소로 봅니다.",
        ],
        "en": [
            "The atomic number is the count of protons in the nucleus.",
            "The periodic table lists the elements in order of atomic number.",
            "Atoms with the same atomic number belong to the same element.",
        ],
    },
    "year": {
        "ko": [
            "역사적 사건의 연도는 전후 맥락과 함께 기억하면 오래 남습니다.",
            "이 사건은 이후의 흐름에 큰 영향을 주었습니다.",
            "연표를 만들어 보면 사건 사이의 관계가 잘 보입니다.",
        ],
        "en": [
            "Dates stick better when you remember what came before and after.",
            "The event shaped much of what happened afterwards.",
            "A simple timeline makes the order of events easy to see.",
        ],
    },
    "province": {
        "ko": [
            "우리나라의 도는 여러 시와 군을 묶는 광역 행정 구역입니다.",
            "도시 이름만으로는 소속 도가 바로 떠오르지 않을 때가 많습니다.",
            "행정 구역은 때때로 이름이나 지위가 바뀌기도 합니다.",
        ],
        "en": [
            "Korean provinces group several cities and counties into one region.",
            "The name of a city alone rarely tells you which province it is in.",
            "Administrative regions sometimes change their names or status.",
        ],
    },
    "planet": {
        "ko": [
            "태양계의 행성은 태양에서 가까운 순서대로 번호를 매길 수 있습니다.",
            "안쪽 행성은 암석형이고 바깥쪽 행성은 거대 행성입니다.",
            "행성의 순서를 외우는 짧은 문장을 만들어 두면 편합니다.",
        ],
        "en": [
            "The planets can be numbered by their distance from the Sun.",
            "The inner planets are rocky while the outer ones are giants.",
            "A short mnemonic makes the order of the planets easy to recall.",
        ],
    },
}

SYSTEM = {
    "ko": [
        "당신은 친절하고 정확한 한국어 도우미입니다.",
        "사용자의 질문에 근거를 들어 정확하게 답하세요.",
        "당신은 학생을 돕는 차분한 선생님입니다. 모르는 것은 확인하고 답하세요.",
    ],
    "en": [
        "You are a helpful and accurate assistant.",
        "Answer the user's questions accurately and explain your reasoning briefly.",
        "You are a patient tutor. Check facts before you state them.",
    ],
}
