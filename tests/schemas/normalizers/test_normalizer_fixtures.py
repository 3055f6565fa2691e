"""Each documented provider body, normalized, validated, and priced by hand.

The expected cost of every fixture is worked out by hand in the provider's
own terms (its token fields, the price per million tokens, see the comment
above each case) and compared with the cost engine (`streams.cost.catalog`)
applied to the normalized event, so a wrong token mapping shows up as a
wrong amount of money.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from schemas.normalizers import FORMATS, normalize
from schemas.usage_event import DROPPED_TEXT_FIELDS, UsageEvent
from streams.cost.catalog import UnitPrices

FIXTURES = Path(__file__).parent / "fixtures"

OWNERSHIP = {
    "tenant_id": "acme",
    "team_id": "search",
    "workflow_id": "wf-answer",
    "workflow_run_id": "run-1",
    "feature_name": "answers",
    "environment": "prod",
}


def D(text: str) -> Decimal:
    return Decimal(text)


def prices(
    input: str, cached_input: str, output: str, cache_write: str | None = None
) -> UnitPrices:
    """USD per million tokens, written out for the test (not the catalog)."""
    return UnitPrices(
        input=D(input),
        cached_input=D(cached_input),
        cache_write=D(cache_write if cache_write is not None else input),
        output=D(output),
        reasoning=D(output),
        source="test",
    )


GPT_4O = prices("2.50", "1.25", "10.00")
GPT_4_1 = prices("2.00", "0.50", "8.00")
GPT_35 = prices("0.50", "0.50", "1.50")
GPT_4 = prices("30.00", "30.00", "60.00")
O3_MINI = prices("1.10", "0.55", "4.40")
O4_MINI = prices("1.10", "0.275", "4.40")
SONNET = prices("3.00", "0.30", "15.00", cache_write="3.75")
OPUS_4 = prices("15.00", "1.50", "75.00", cache_write="18.75")
HAIKU_35 = prices("0.80", "0.08", "4.00", cache_write="1.00")
GEMINI_20_FLASH = prices("0.10", "0.025", "0.40")
GEMINI_25_FLASH = prices("0.30", "0.03", "2.50")
GEMINI_25_PRO = prices("1.25", "0.3125", "10.00")
NOVA_LITE = prices("0.06", "0.015", "0.24")
GPT_4O_MINI = prices("0.15", "0.075", "0.60")
GPT_5 = prices("1.25", "0.125", "10.00")
GPT_5_6_SOL = prices("4.00", "0.40", "20.00", cache_write="5.00")
NOVA_MICRO = prices("0.035", "0.00875", "0.14")
# Variants, written out per the providers' pricing pages: flex and batch are half
# the standard rates, OpenAI priority about 1.7x.
O3_FLEX = prices("1.00", "0.25", "4.00")
GPT_5_FLEX = prices("0.625", "0.0625", "5.00")
GEMINI_3_FLASH_FLEX = prices("0.25", "0.025", "1.50")
O4_MINI_FLEX = prices("0.55", "0.1375", "2.20")
GPT_4O_PRIORITY = prices("4.25", "2.125", "17.00")
GPT_4O_MINI_BATCH = prices("0.075", "0.0375", "0.30")
GPT_4_1_BATCH = prices("1.00", "0.25", "4.00")
SONNET_BATCH = prices("1.50", "0.15", "7.50", cache_write="1.875")
GEMINI_25_FLASH_BATCH = prices("0.15", "0.0375", "1.25")
GEMINI_25_PRO_HALF = prices("0.625", "0.15625", "5.00")  # batch and flex
HAIKU_3_BATCH = prices("0.125", "0.015", "0.625")
NOVA_LITE_BATCH = prices("0.03", "0.0075", "0.12")


def cost(event: UsageEvent, p: UnitPrices) -> Decimal:
    """The cost engine's formula (docs/architecture.md, "Cost") on the normalized counts."""
    return p.cost(
        input_tokens=event.input_tokens,
        cached_tokens=event.cached_tokens,
        cache_write_tokens=event.cache_write_tokens,
        output_tokens=event.output_tokens,
        reasoning_tokens=event.reasoning_tokens,
    ).total


@dataclass(frozen=True)
class Case:
    fixture: str
    provider: str
    model: str
    request_id: str
    tokens: tuple[int, int, int, int, int]  # input, cached, cache_write, output, reasoning
    prices: UnitPrices
    expected_cost: str
    call: dict[str, Any] | None = None
    context: tuple[str, bool] = ("", False)  # service_tier, batch


CASES = [
    # 1117 prompt x 2.50 + 46 completion x 10.00 = 2792.5 + 460
    Case(
        "openai_chat_completion",
        "openai",
        "gpt-4o-2024-08-06",
        "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        (1117, 0, 0, 46, 0),
        GPT_4O,
        "0.0032525",
        context=("default", False),
    ),
    # prompt 4020 includes 4012 cached: 8 x 4.00 + 4012 x 0.40 + 4 x 20.00 = 32 + 1604.8 + 80
    Case(
        "openai_chat_cached",
        "openai",
        "gpt-5.6-sol",
        "chatcmpl-E1mBQt42vYTsKNd5wnyJlT0db7v9S",
        (4020, 4012, 0, 4, 0),
        GPT_5_6_SOL,
        "0.0017168",
        context=("default", False),
    ),
    # the usage chunk: 53 x 0.15 + 15 x 0.60 = 7.95 + 9
    Case(
        "openai_chat_stream_usage_chunk",
        "openai",
        "gpt-4o-mini-2024-07-18",
        "chatcmpl-Dx0XpqH8w09uBXwq1zFGYdETjtnEl",
        (53, 0, 0, 15, 0),
        GPT_4O_MINI,
        "0.00001695",
        context=("default", False),
    ),
    # 11 x 1.10 + 809 completion (768 of it reasoning) x 4.40 = 12.1 + 3559.6
    Case(
        "openai_chat_reasoning",
        "openai",
        "o3-mini-2025-01-31",
        "chatcmpl-BJyAKqCjJI3mIdQmTSW6UlG6NKpjm",
        (11, 0, 0, 809, 768),
        O3_MINI,
        "0.0035717",
        context=("default", False),
    ),
    # no details objects: 9 x 0.50 + 12 x 1.50 = 4.5 + 18
    Case(
        "openai_chat_no_details",
        "openai",
        "gpt-3.5-turbo-0125",
        "chatcmpl-123",
        (9, 0, 0, 12, 0),
        GPT_35,
        "0.0000225",
    ),
    # 328 x 2.50 + 52 x 10.00 = 820 + 520
    Case(
        "openai_responses",
        "openai",
        "gpt-4o-2024-08-06",
        "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41",
        (328, 0, 0, 52, 0),
        GPT_4O,
        "0.00134",
    ),
    # 1065 x 1.10 + 760 output (576 reasoning) x 4.40 = 1171.5 + 3344
    Case(
        "openai_responses_reasoning",
        "openai",
        "o4-mini-2025-04-16",
        "resp_0558010cf1416a490068faa0f945bc81a0b6a6dfb7391030d5",
        (1065, 0, 0, 760, 576),
        O4_MINI,
        "0.0045155",
        context=("default", False),
    ),
    # input 3727 includes 3200 cached; output 347 includes 128 reasoning:
    # 527 x 1.25 + 3200 x 0.125 + 347 x 10.00 = 658.75 + 400 + 3470
    Case(
        "openai_responses_completed_event",
        "openai",
        "gpt-5-2025-08-07",
        "resp_68c35098e6fc819e80fb94b25b7d031b0f2d670b80edc507",
        (3727, 3200, 0, 347, 128),
        GPT_5,
        "0.00452875",
        context=("default", False),
    ),
    # 566 x 3.00 + 126 x 15.00 = 1698 + 1890
    Case(
        "anthropic_message",
        "anthropic",
        "claude-sonnet-4-20250514",
        "msg_01SZ8KP8HhB1TxP6Ybbv6iKz",
        (566, 0, 0, 126, 0),
        SONNET,
        "0.003588",
        context=("standard", False),
    ),
    # input_tokens 3 excludes the 1111 read: 3 x 3.00 + 1111 x 0.30 + 406 x 15.00
    # = 9 + 333.3 + 6090
    Case(
        "anthropic_cache_read",
        "anthropic",
        "claude-sonnet-4-5-20250929",
        "msg_01UUPT9QdZnZSRzcQJkjG25U",
        (1114, 1111, 0, 406, 0),
        SONNET,
        "0.0064323",
        context=("standard", False),
    ),
    # 3 x 3.00 + 1111 read x 0.30 + 418 written (the 5m split, not extra) x 3.75 + 33 x 15.00
    # = 9 + 333.3 + 1567.5 + 495
    Case(
        "anthropic_cache_write_read",
        "anthropic",
        "claude-sonnet-4-5-20250929",
        "msg_01KPaKTJSqAKoZri7Ujrny58",
        (1532, 1111, 418, 33, 0),
        SONNET,
        "0.0024048",
        context=("standard", False),
    ),
    # compaction: the answering turn 229 in / 5 out plus the compaction pass 100 in,
    # 55096 written, 131 out: 329 x 3.00 + 55096 x 3.75 + 136 x 15.00 = 987 + 206610 + 2040
    Case(
        "anthropic_compaction",
        "anthropic",
        "claude-sonnet-4-6",
        "msg_011CduoCGqnmwXgi7jhzyVZM",
        (55425, 0, 55096, 136, 0),
        SONNET,
        "0.209637",
        context=("standard", False),
    ),
    # 48 x 3.00 + 1800 read x 0.30 + 556 written (456 + 100, not 1112) x 3.75 + 503 x 15.00
    # = 144 + 540 + 2085 + 7545
    Case(
        "anthropic_cache_write_ttl",
        "anthropic",
        "claude-sonnet-4-20250514",
        "msg_01CacheWriteTtl0000000000",
        (2404, 1800, 556, 503, 0),
        SONNET,
        "0.010314",
    ),
    # 25 x 15.00 + 15 (the last cumulative value, not 1 + 15) x 75.00 = 375 + 1125
    Case(
        "anthropic_stream",
        "anthropic",
        "claude-opus-4-20250514",
        "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
        (25, 0, 0, 15, 0),
        OPUS_4,
        "0.0015",
    ),
    # the last cumulative usage (input grew from 2050 to 31772 with the searched pages):
    # 31772 x 3.00 + 644 x 15.00 = 95316 + 9660
    Case(
        "anthropic_stream_server_tools",
        "anthropic",
        "claude-sonnet-4-20250514",
        "msg_019ifek4sTha46JcCb2z2yPp",
        (31772, 0, 0, 644, 0),
        SONNET,
        "0.104976",
        context=("standard", False),
    ),
    # thinking inside the cumulative output: 43 x 3.00 + 282 x 15.00 = 129 + 4230
    Case(
        "anthropic_stream_thinking",
        "anthropic",
        "claude-sonnet-4-20250514",
        "msg_01ALwQ87pTS7hH1PjSdC9wJD",
        (43, 0, 0, 282, 0),
        SONNET,
        "0.004359",
        context=("standard", False),
    ),
    # the delta's top-level 181 in / 8 out plus its compaction iteration (100 in, 55096 read,
    # 83 out): 281 x 3.00 + 55096 x 0.30 + 91 x 15.00 = 843 + 16528.8 + 1365
    Case(
        "anthropic_stream_compaction",
        "anthropic",
        "claude-sonnet-4-6",
        "msg_011CduoCRono7pFKoTWpPAia",
        (55377, 55096, 0, 91, 0),
        SONNET,
        "0.0187368",
        context=("standard", False),
    ),
    # thinking is inside output_tokens, not reported apart: 1343 x 3.00 + 538 x 15.00
    # = 4029 + 8070
    Case(
        "anthropic_thinking",
        "anthropic",
        "claude-sonnet-4-20250514",
        "msg_016e2w8nkCuArd5HFSfEwke7",
        (1343, 0, 0, 538, 0),
        SONNET,
        "0.012099",
        context=("standard", False),
    ),
    # 268 x 0.10 + 162 x 0.40 = 26.8 + 64.8
    Case(
        "gemini_generate_content",
        "google",
        "gemini-2.0-flash",
        "5YfNaKulJaGtmtkPz5eQwAQ",
        (268, 0, 0, 162, 0),
        GEMINI_20_FLASH,
        "0.0000916",
    ),
    # thoughts are apart from candidates: 79 x 0.30 + (15 + 69) x 2.50 = 23.7 + 210
    Case(
        "gemini_thinking",
        "google",
        "gemini-2.5-flash",
        "WKNOarSwGpjhz7IP99bVwQU",
        (79, 0, 0, 84, 69),
        GEMINI_25_FLASH,
        "0.0002337",
        context=("standard", False),
    ),
    # prompt 3520 includes 3512 cached: 8 x 0.30 + 3512 x 0.03 + (2 + 42) x 2.50
    # = 2.4 + 105.36 + 110
    Case(
        "gemini_cached_content",
        "google",
        "gemini-2.5-flash",
        "_VQYaqvRGbW6qtsPg4TDoAg",
        (3520, 3512, 0, 44, 42),
        GEMINI_25_FLASH,
        "0.00021776",
        context=("standard", False),
    ),
    # tool-use prompt 132 is apart from prompt 85: (85 + 132) x 0.30 + (28 + 54) x 2.50
    # = 65.1 + 205
    Case(
        "gemini_tool_use_prompt",
        "google",
        "gemini-2.5-flash",
        "nFP6aZ_4HPuU6dkP-uetwA0",
        (217, 0, 0, 82, 54),
        GEMINI_25_FLASH,
        "0.0002701",
    ),
    # the SDK's snake_case dump of the gemini_tool_use_prompt body: the same counts,
    # (85 + 132) x 0.30 + (28 + 54) x 2.50 = 65.1 + 205
    Case(
        "gemini_sdk_dump",
        "google",
        "gemini-2.5-flash",
        "nFP6aZ_4HPuU6dkP-uetwA0",
        (217, 0, 0, 82, 54),
        GEMINI_25_FLASH,
        "0.0002701",
    ),
    # 211 x 3.00 + 18 x 15.00 = 633 + 270
    Case(
        "bedrock_converse",
        "aws",
        "us.anthropic.claude-sonnet-4-6",
        "bedrock-converse-recorded-1",
        (211, 0, 0, 18, 0),
        SONNET,
        "0.000903",
        call={
            "model": "us.anthropic.claude-sonnet-4-6",
            "request_id": "bedrock-converse-recorded-1",
        },
    ),
    # inputTokens 3 excludes both cache counts, each read once (not once per spelling):
    # 3 x 3.00 + 1712 x 0.30 + 236 x 3.75 + 121 x 15.00 = 9 + 513.6 + 885 + 1815
    Case(
        "bedrock_converse_cache",
        "aws",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "bedrock-converse-recorded-2",
        (1951, 1712, 236, 121, 0),
        SONNET,
        "0.0032226",
        call={
            "model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "request_id": "bedrock-converse-recorded-2",
        },
    ),
    # the metadata event: 13 x 0.035 + 82 x 0.14 = 0.455 + 11.48
    Case(
        "bedrock_converse_stream",
        "aws",
        "us.amazon.nova-micro-v1:0",
        "bedrock-stream-recorded-1",
        (13, 0, 0, 82, 0),
        NOVA_MICRO,
        "0.000011935",
        call={"model": "us.amazon.nova-micro-v1:0", "request_id": "bedrock-stream-recorded-1"},
    ),
    # Traceloop's span for the openai_chat_cached body: the same counts and cost; the served
    # 'default' beats the requested 'auto'
    Case(
        "otel_genai_span",
        "openai",
        "gpt-5.6-sol",
        "chatcmpl-E1mBQt42vYTsKNd5wnyJlT0db7v9S",
        (4020, 4012, 0, 4, 0),
        GPT_5_6_SOL,
        "0.0017168",
        context=("default", False),
    ),
    # the Anthropic SDK's own span for the anthropic_cache_write_read body: inclusive input 1532
    # (not 1532 + 1111 + 418); the same cost as that fixture
    Case(
        "otel_genai_anthropic_sdk",
        "anthropic",
        "claude-sonnet-4-5-20250929",
        "msg_01KPaKTJSqAKoZri7Ujrny58",
        (1532, 1111, 418, 33, 0),
        SONNET,
        "0.0024048",
        context=("standard", False),
    ),
    # Traceloop's span for the same call, cache writes spelled cache_creation.input_tokens
    Case(
        "otel_genai_traceloop_anthropic",
        "anthropic",
        "claude-sonnet-4-5-20250929",
        "msg_01KPaKTJSqAKoZri7Ujrny58",
        (1532, 1111, 418, 33, 0),
        SONNET,
        "0.0024048",
    ),
    # the semantic conventions' own example span: 52 x 30.00 + 47 x 60.00 = 1560 + 2820
    Case(
        "otel_genai_semconv_chat",
        "openai",
        "gpt-4-0613",
        "chatcmpl-9J3uIL87gldCFtiIbyaOvTeYBRA3l",
        (52, 0, 0, 47, 0),
        GPT_4,
        "0.00438",
    ),
    # an older Traceloop span: gen_ai.system "Anthropic" (capitalised) is the provider
    # "anthropic"; prompt_tokens 1532 already include the cache counts; the same cost as
    # anthropic_cache_write_read
    Case(
        "otel_genai_deprecated_traceloop",
        "anthropic",
        "claude-sonnet-4-5-20250929",
        "msg_01KPaKTJSqAKoZri7Ujrny58",
        (1532, 1111, 418, 33, 0),
        SONNET,
        "0.0024048",
    ),
    # exclusive prompt_tokens 12 < cache read 4000: 12 x 0.80 + 4000 x 0.08 + 150 x 4.00
    # = 9.6 + 320 + 600
    Case(
        "otel_genai_deprecated",
        "anthropic",
        "claude-3-5-haiku-20241022",
        "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        (4012, 4000, 0, 150, 0),
        HAIKU_35,
        "0.0009296",
    ),
    # 1200 x 0.30 + 300 output (100 of it reasoning) x 2.50 = 360 + 750
    Case(
        "otel_genai_otlp",
        "google",
        "gemini-2.5-flash",
        "otlp-resp-0001",
        (1200, 0, 0, 300, 100),
        GEMINI_25_FLASH,
        "0.00111",
    ),
    # as openai_chat_cached
    Case(
        "litellm_openai",
        "openai",
        "gpt-4o-2024-08-06",
        "2c5b1e0a-9d8f-4a7b-b6c5-d4e3f2a1b0c9",
        (2006, 1920, 0, 300, 0),
        GPT_4O,
        "0.005615",
    ),
    # LiteLLM's own payload for the anthropic_cache_write_read body: prompt_tokens 1532 already
    # holds the 418 written; the same cost as that fixture
    Case(
        "litellm_anthropic_current",
        "anthropic",
        "claude-sonnet-4-5-20250929",
        "chatcmpl-2637ec7e-d908-4021-a792-20b07472d69d",
        (1532, 1111, 418, 33, 0),
        SONNET,
        "0.0024048",
        context=("standard", False),
    ),
    # LiteLLM 1.55.10's payload for the same body: prompt_tokens 1532 already hold the 418
    # written though no cache_creation_tokens detail says so; the same cost as
    # anthropic_cache_write_read (its own response_cost, 0.0036588, counts the writes twice)
    Case(
        "litellm_anthropic_1_55",
        "anthropic",
        "claude-3-5-sonnet-20241022",
        "chatcmpl-6fd09bf0-4dad-4c0f-b722-efbca49b2b3b",
        (1532, 1111, 418, 33, 0),
        SONNET,
        "0.0024048",
    ),
    # LiteLLM's payload for the openai_chat_cached body: the same cost as that fixture
    Case(
        "litellm_openai_cached",
        "openai",
        "gpt-5.6-sol",
        "chatcmpl-E1mBQt42vYTsKNd5wnyJlT0db7v9S",
        (4020, 4012, 0, 4, 0),
        GPT_5_6_SOL,
        "0.0017168",
        context=("default", False),
    ),
    # LiteLLM's payload for the anthropic_compaction body (compaction folded into its counts)
    Case(
        "litellm_anthropic_compaction",
        "anthropic",
        "claude-sonnet-4-6",
        "chatcmpl-7a478d28-fc14-4165-b2ec-d31749a3d38d",
        (55425, 0, 55096, 136, 0),
        SONNET,
        "0.209637",
        context=("standard", False),
    ),
    # as anthropic_cache_write_ttl: prompt_tokens 1848 lacks the 556 written
    Case(
        "litellm_anthropic_older",
        "anthropic",
        "claude-sonnet-4-20250514",
        "1a2b3c4d-5e6f-4781-9a0b-c1d2e3f4a5b6",
        (2404, 1800, 556, 503, 0),
        SONNET,
        "0.010314",
    ),
    # flex tier: (1840 - 1024) x 1.00 + 1024 x 0.25 + 2650 (2112 reasoning) x 4.00
    # = 816 + 256 + 10600
    Case(
        "openai_chat_flex",
        "openai",
        "o3-2025-04-16",
        "chatcmpl-CFlex0000000000000000000000",
        (1840, 1024, 0, 2650, 2112),
        O3_FLEX,
        "0.011672",
        context=("flex", False),
    ),
    # priority tier: 1152 x 4.25 + 2048 x 2.125 + 410 x 17.00 = 4896 + 4352 + 6970
    Case(
        "openai_chat_priority",
        "openai",
        "gpt-4o-2024-08-06",
        "chatcmpl-CPrio0000000000000000000000",
        (3200, 2048, 0, 410, 0),
        GPT_4O_PRIORITY,
        "0.016218",
        context=("priority", False),
    ),
    # the caller's requested 'auto' loses to the response's 'default':
    # 8 x 0.15 + 9 x 0.60 = 1.2 + 5.4
    Case(
        "openai_chat_default_tier_requested_auto",
        "openai",
        "gpt-4o-mini-2024-07-18",
        "chatcmpl-Dr3KONlJHqM2OKkn7IPxwgC3ZIEZw",
        (8, 0, 0, 9, 0),
        GPT_4O_MINI,
        "0.0000066",
        call={"service_tier": "auto"},
        context=("default", False),
    ),
    # prompt 4020 includes 4012 written: 8 x 4.00 + 4012 x 5.00 + 4 x 20.00 = 32 + 20060 + 80
    Case(
        "openai_chat_cache_write",
        "openai",
        "gpt-5.6-sol",
        "chatcmpl-E1mBLGr3Ql1FsH8cdc76XdGw3PleH",
        (4020, 0, 4012, 4, 0),
        GPT_5_6_SOL,
        "0.020172",
        context=("default", False),
    ),
    # flex: 53 x 0.625 + 469 output (448 reasoning) x 5.00 = 33.125 + 2345
    Case(
        "openai_responses_flex",
        "openai",
        "gpt-5-2025-08-07",
        "resp_0050471a34b36ae60068c97b94a480819587a9d70cf2979b33",
        (53, 0, 0, 469, 448),
        GPT_5_FLEX,
        "0.002378125",
        context=("flex", False),
    ),
    # batch: 24 x 0.075 + 15 x 0.30 = 1.8 + 4.5
    Case(
        "openai_batch_output_chat",
        "openai",
        "gpt-4o-mini-2024-07-18",
        "chatcmpl-9758Iw",
        (24, 0, 0, 15, 0),
        GPT_4O_MINI_BATCH,
        "0.0000063",
        context=("default", True),
    ),
    # batch: 812 x 1.00 + 9 x 4.00
    Case(
        "openai_batch_output_responses",
        "openai",
        "gpt-4.1-2025-04-14",
        "resp_batch000000000000000000000000000000000000000",
        (812, 0, 0, 9, 0),
        GPT_4_1_BATCH,
        "0.000848",
        context=("default", True),
    ),
    # batch: 11 x 1.50 + 36 x 7.50 = 16.5 + 270
    Case(
        "anthropic_batch_result",
        "anthropic",
        "claude-sonnet-4-5-20250929",
        "msg_014VwiXbi91y3JMjcpyGBHX5",
        (11, 0, 0, 36, 0),
        SONNET_BATCH,
        "0.0002865",
        context=("", True),
    ),
    # thinking_tokens are part of output_tokens: 51 x 3.00 + 168 x 15.00 = 153 + 2520
    Case(
        "anthropic_thinking_tokens",
        "anthropic",
        "claude-sonnet-4-5-20250929",
        "msg_01HYr7FZRVD92Jedxe9ztU1p",
        (51, 0, 0, 168, 112),
        SONNET,
        "0.002673",
        context=("standard", False),
    ),
    # 320 x 15.00 + 9000 x 1.50 + 1500 x 18.75 + 700 x 75.00 = 4800 + 13500 + 28125 + 52500
    Case(
        "anthropic_priority_tier",
        "anthropic",
        "claude-opus-4-1-20250805",
        "msg_01PriorityTier000000000000",
        (10820, 9000, 1500, 700, 0),
        OPUS_4,
        "0.098925",
        context=("priority", False),
    ),
    # the last cumulative usage: 40 x 0.80 + 6000 x 0.08 + 2000 x 1.00 + 250 x 4.00
    # = 32 + 480 + 2000 + 1000
    Case(
        "anthropic_stream_cache",
        "anthropic",
        "claude-3-5-haiku-20241022",
        "msg_01StreamCache0000000000000",
        (8040, 6000, 2000, 250, 0),
        HAIKU_35,
        "0.003512",
        context=("standard", False),
    ),
    # 900 x 0.06 + 300 x 0.24 = 54 + 72 (no flex rate written here: standard prices)
    Case(
        "bedrock_converse_flex",
        "aws",
        "amazon.nova-lite-v1:0",
        "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f",
        (900, 0, 0, 300, 0),
        NOVA_LITE,
        "0.000126",
        call={"model": "amazon.nova-lite-v1:0"},
        context=("flex", False),
    ),
    # Bedrock batch, Anthropic body: 1200 x 0.125 + 150 x 0.625 = 150 + 93.75
    Case(
        "bedrock_batch_record_claude",
        "aws",
        "claude-3-haiku-20240307",
        "msg_bdrk_01BatchRecord0000000000",
        (1200, 0, 0, 150, 0),
        HAIKU_3_BATCH,
        "0.00024375",
        context=("", True),
    ),
    # Bedrock batch, Converse job: 500 x 0.03 + 60 x 0.12 = 15 + 7.2
    Case(
        "bedrock_batch_record_converse",
        "aws",
        "amazon.nova-lite-v1:0",
        "3223593EFGH",
        (500, 0, 0, 60, 0),
        NOVA_LITE_BATCH,
        "0.0000222",
        call={"model": "amazon.nova-lite-v1:0"},
        context=("", True),
    ),
    # batch: 1500 x 0.15 + (40 + 210 thoughts) x 1.25 = 225 + 312.5
    Case(
        "gemini_vertex_batch_line",
        "google",
        "gemini-2.5-flash",
        "vbatch-resp-0001",
        (1500, 0, 0, 250, 210),
        GEMINI_25_FLASH_BATCH,
        "0.0005375",
        context=("", True),
    ),
    # batch: 4000 x 0.625 + 600 x 5.00 = 2500 + 3000
    Case(
        "gemini_api_batch_line",
        "google",
        "gemini-2.5-pro",
        "gbatch-resp-0001",
        (4000, 0, 0, 600, 0),
        GEMINI_25_PRO_HALF,
        "0.0055",
        context=("", True),
    ),
    # flex: 5 x 0.25 + (1 + 51 thoughts) x 1.50 = 1.25 + 78
    Case(
        "gemini_vertex_flex",
        "google",
        "gemini-3-flash-preview",
        "T9--adqvDqL4vdIPz7X2iQ4",
        (5, 0, 0, 52, 51),
        GEMINI_3_FLASH_FLEX,
        "0.00007925",
        context=("flex", False),
    ),
    # the last chunk's cumulative usage: 5 x 0.25 + (1 + 100 thoughts) x 1.50 = 1.25 + 151.5
    Case(
        "gemini_vertex_flex_stream",
        "google",
        "gemini-3-flash-preview",
        "a9--aa6MOKL4vdIPz7X2iQ4",
        (5, 0, 0, 101, 100),
        GEMINI_3_FLASH_FLEX,
        "0.00015275",
        context=("flex", False),
    ),
    # the last chunk's cumulative usage, not the sum: 18 x 0.30 + (80 + 35 thoughts) x 2.50
    # = 5.4 + 287.5
    Case(
        "gemini_stream_events",
        "google",
        "gemini-2.5-flash",
        "ru1garvBEoOiqtsP2fznmQw",
        (18, 0, 0, 115, 35),
        GEMINI_25_FLASH,
        "0.0002929",
        context=("standard", False),
    ),
    # LiteLLM's own fixture: 10 x 2.50 + 20 x 10.00 = 25 + 200 = its response_cost
    Case(
        "litellm_datetime_strings",
        "openai",
        "gpt-4o",
        "chatcmpl-2299b6a2-82a3-465a-b47c-04e685a2227f",
        (10, 0, 0, 20, 0),
        GPT_4O,
        "0.000225",
    ),
    # flex: 2000 x 1.00 + 1000 x 0.25 + 1500 (1200 reasoning) x 4.00 = 2000 + 250 + 6000
    Case(
        "litellm_iso_times_service_tier",
        "openai",
        "o3-2025-04-16",
        "d5b3e1c4-1b2d-4a0c-8c9d-2e3f4a5b6c7d",
        (3000, 1000, 0, 1500, 1200),
        O3_FLEX,
        "0.00825",
        context=("flex", False),
    ),
    # flex from openai.response.service_tier: 2000 x 1.00 + 400 x 0.25 + 900 x 4.00
    Case(
        "otel_genai_openai_service_tier",
        "openai",
        "o3-2025-04-16",
        "chatcmpl-otelflex0000000000000",
        (2400, 400, 0, 900, 0),
        O3_FLEX,
        "0.0057",
        context=("flex", False),
    ),
]


# recorded: a response body recorded from the provider (usage verbatim, long text abridged);
# documentation example: the provider's documented example, verbatim; illustrative: shaped
# per the reference with made-up counts, kept where no recorded body of the variant was found.
PROVENANCES = {"recorded", "documentation example", "illustrative"}


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def test_every_fixture_has_a_case_and_names_its_documentation() -> None:
    names = {path.stem for path in FIXTURES.glob("*.json")}
    assert names == {case.fixture for case in CASES}
    for name in names:
        fixture = load(name)
        assert fixture["source"].startswith("https://"), name
        assert fixture["format"] in FORMATS, name
        assert fixture["provenance"] in PROVENANCES, name


def test_recorded_fixtures_name_the_file_and_commit_they_come_from() -> None:
    recorded = [
        load(case.fixture) for case in CASES if load(case.fixture)["provenance"] == "recorded"
    ]
    assert len(recorded) >= 37
    for fixture in recorded:
        origin = fixture["recorded"]
        assert len(origin["commit"]) == 40
        assert fixture["source"] == (
            f"https://github.com/{origin['repository']}/blob/{origin['commit']}/{origin['path']}"
        )


def test_illustrative_fixtures_say_what_was_searched() -> None:
    for case in CASES:
        fixture = load(case.fixture)
        if fixture["provenance"] == "illustrative":
            assert fixture["searched"].startswith("No public recorded body found"), case.fixture


def test_every_format_has_a_fixture() -> None:
    covered = {load(case.fixture)["format"] for case in CASES}
    assert covered | {"openai"} == set(FORMATS)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.fixture)
def test_fixture_normalizes_to_the_hand_computed_cost(case: Case) -> None:
    fixture = load(case.fixture)
    raw = normalize(fixture["format"], fixture["body"], **OWNERSHIP, **(case.call or {}))
    event = UsageEvent.model_validate(raw)

    assert (event.provider, event.model, event.request_id) == (
        case.provider,
        case.model,
        case.request_id,
    )
    assert (
        event.input_tokens,
        event.cached_tokens,
        event.cache_write_tokens,
        event.output_tokens,
        event.reasoning_tokens,
    ) == case.tokens
    assert cost(event, case.prices) == Decimal(case.expected_cost)
    assert event.tenant_id == "acme" and event.team_id == "search"
    assert event.workflow_run_id == "run-1"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.fixture)
def test_fixture_reads_the_served_tier_and_batch(case: Case) -> None:
    fixture = load(case.fixture)
    raw = normalize(fixture["format"], fixture["body"], **OWNERSHIP, **(case.call or {}))
    event = UsageEvent.model_validate(raw)
    assert (event.service_tier, event.batch) == case.context


TOTAL_KEYS = (
    "total_tokens",
    "totalTokens",
    "totalTokenCount",
    "total_token_count",
    "gen_ai.usage.total_tokens",
)
# Bodies whose own total is not input + output by design.
TOTAL_EXCEPTIONS = {
    # an older LiteLLM release: prompt_tokens (and so total_tokens) lacks the cache writes
    "litellm_anthropic_older": 556,
}


def _last_total(value: Any) -> int | None:
    found: int | None = None
    if isinstance(value, dict):
        for key, item in value.items():
            if key in TOTAL_KEYS and isinstance(item, int):
                found = item
            else:
                inner = _last_total(item)
                found = inner if inner is not None else found
    elif isinstance(value, list):
        for item in value:
            inner = _last_total(item)
            found = inner if inner is not None else found
    return found


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.fixture)
def test_canonical_counts_add_up_to_the_bodys_own_total(case: Case) -> None:
    fixture = load(case.fixture)
    total = _last_total(fixture["body"])
    if total is None:
        # Anthropic Messages bodies (also inside Bedrock batch lines) carry no total.
        assert fixture["format"] in ("anthropic", "otel_genai") or case.model.startswith(
            "claude"
        ), "no total in the body"
        return
    input_tokens, _, _, output_tokens, _ = case.tokens
    assert input_tokens + output_tokens == total + TOTAL_EXCEPTIONS.get(case.fixture, 0)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.fixture)
def test_normalized_event_carries_no_prompt_or_completion_text(case: Case) -> None:
    fixture = load(case.fixture)
    raw = normalize(fixture["format"], fixture["body"], **OWNERSHIP, **(case.call or {}))
    assert not set(raw) & set(DROPPED_TEXT_FIELDS)
    assert set(raw) <= set(UsageEvent.model_fields)
    texts = _strings(fixture["body"], min_length=12)
    dumped = json.dumps(raw, default=str)
    assert not [text for text in texts if text in dumped and " " in text and not _is_time(text)]


def _is_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _strings(value: Any, *, min_length: int) -> list[str]:
    if isinstance(value, str):
        return [value] if len(value) >= min_length else []
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v, min_length=min_length)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v, min_length=min_length)]
    return []


def test_body_timestamps_are_used_when_the_body_has_one() -> None:
    chat = normalize("openai_chat", load("openai_chat_completion")["body"], tenant_id="t")
    assert UsageEvent.model_validate(chat).timestamp == datetime.fromtimestamp(1741570283, UTC)
    vertex = normalize("gemini", load("gemini_vertex_flex")["body"], tenant_id="t")
    assert UsageEvent.model_validate(vertex).timestamp == datetime(
        2026, 3, 21, 18, 11, 27, 235482, tzinfo=UTC
    )
    bedrock = normalize(
        "bedrock",
        load("bedrock_converse_flex")["body"],
        tenant_id="t",
        model="amazon.nova-lite-v1:0",
    )
    assert UsageEvent.model_validate(bedrock).timestamp == datetime(2025, 11, 4, 10, 0, tzinfo=UTC)


def test_side_information_is_read_from_the_bodies() -> None:
    recorded = load("bedrock_converse_cache")["body"]
    bedrock = UsageEvent.model_validate(
        normalize("bedrock", recorded, tenant_id="t", model="m", request_id="r")
    )
    # metrics.latencyMs; cacheDetails holds one 5-minute write, so no 1-hour part
    assert (bedrock.latency_ms, bedrock.cache_write_1h_tokens) == (2818, 0)
    boto = UsageEvent.model_validate(
        normalize("bedrock", load("bedrock_converse_flex")["body"], tenant_id="t", model="m")
    )
    assert (boto.latency_ms, boto.status_code, boto.retry_count) == (4100, 200, 0)

    anthropic = UsageEvent.model_validate(
        normalize("anthropic", load("anthropic_cache_write_ttl")["body"], tenant_id="t")
    )
    assert anthropic.cache_write_1h_tokens == 100

    otlp = UsageEvent.model_validate(
        normalize("otel_genai", load("otel_genai_otlp")["body"], tenant_id="t")
    )
    assert (otlp.workflow_run_id, otlp.environment, otlp.latency_ms) == ("run-42", "staging", 2400)

    litellm = UsageEvent.model_validate(
        normalize("litellm", load("litellm_openai")["body"], tenant_id="t")
    )
    assert (litellm.team_id, litellm.user_id, litellm.latency_ms) == ("team-search", "u-17", 1750)
    assert litellm.reported_cost_usd == Decimal("0.005615")
    assert litellm.api_key_id.startswith("88dc28d0")


@pytest.mark.parametrize(
    "name", ["litellm_anthropic_current", "litellm_openai_cached", "litellm_anthropic_compaction"]
)
def test_litellms_own_cost_for_a_recorded_body_equals_the_hand_computed_one(name: str) -> None:
    """LiteLLM priced these recorded bodies itself (response_cost, a float): an independent
    check of the token mapping and of the hand computation."""
    [case] = [case for case in CASES if case.fixture == name]
    event = UsageEvent.model_validate(normalize("litellm", load(name)["body"], tenant_id="t"))
    assert event.reported_cost_usd is not None
    assert round(event.reported_cost_usd, 12) == Decimal(case.expected_cost)


def test_datetime_text_in_every_form_a_source_writes_is_read() -> None:
    naive = UsageEvent.model_validate(
        normalize("litellm", load("litellm_datetime_strings")["body"], tenant_id="t")
    )
    assert naive.timestamp == datetime(2025, 1, 24, 9, 20, 46, 847371, tzinfo=UTC)
    assert naive.latency_ms == 5  # 46.851954 - 46.847371 s
    # LiteLLM's float cost, rounded to the ledger's 18 places (issue 22: it stalled the
    # Arrow insert with 20).
    assert naive.reported_cost_usd == Decimal("0.000225000000000000")
    offset = UsageEvent.model_validate(
        normalize("litellm", load("litellm_iso_times_service_tier")["body"], tenant_id="t")
    )
    assert offset.timestamp == datetime(2025, 11, 4, 10, 0, 0, 250000, tzinfo=UTC)
    assert offset.latency_ms == 2750
    vertex_batch = UsageEvent.model_validate(
        normalize("gemini", load("gemini_vertex_batch_line")["body"], tenant_id="t")
    )
    assert vertex_batch.timestamp == datetime(2025, 10, 2, 8, 14, 58, 123456, tzinfo=UTC)


def test_batch_lines_keep_their_status_and_failed_lines_are_refused() -> None:
    line = load("openai_batch_output_chat")["body"]
    event = UsageEvent.model_validate(normalize("openai", line, tenant_id="t"))
    assert (event.status_code, event.batch) == (200, True)
    failed = {"id": "batch_req_1", "custom_id": "r-9", "response": None, "error": {"code": "x"}}
    with pytest.raises(ValueError, match="not billed"):
        normalize("openai_chat", failed, tenant_id="t")
    errored = {"custom_id": "r-9", "result": {"type": "errored", "error": {"type": "x"}}}
    with pytest.raises(ValueError, match="not billed"):
        normalize("anthropic", errored, tenant_id="t")
    record = {"recordId": "1223213ABCD", "modelInput": {}, "error": {"errorCode": 400}}
    with pytest.raises(ValueError, match="not billed"):
        normalize("bedrock", record, tenant_id="t", model="m")
