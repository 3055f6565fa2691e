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
O3_MINI = prices("1.10", "0.55", "4.40")
O4_MINI = prices("1.10", "0.275", "4.40")
SONNET = prices("3.00", "0.30", "15.00", cache_write="3.75")
OPUS_4 = prices("15.00", "1.50", "75.00", cache_write="18.75")
HAIKU_35 = prices("0.80", "0.08", "4.00", cache_write="1.00")
GEMINI_20_FLASH = prices("0.10", "0.025", "0.40")
GEMINI_25_FLASH = prices("0.30", "0.075", "2.50")
GEMINI_25_PRO = prices("1.25", "0.3125", "10.00")
NOVA_LITE = prices("0.06", "0.015", "0.24")
GPT_4O_MINI = prices("0.15", "0.075", "0.60")
# Variants, written out per the providers' pricing pages: flex and batch are half
# the standard rates, OpenAI priority about 1.7x.
O3_FLEX = prices("1.00", "0.25", "4.00")
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
    """The cost engine's formula (ARCHITECTURE.md) on the normalized counts."""
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
    # prompt 2006 includes 1920 cached: 86 x 2.50 + 1920 x 1.25 + 300 x 10.00 = 215 + 2400 + 3000
    Case(
        "openai_chat_cached",
        "openai",
        "gpt-4o-2024-08-06",
        "chatcmpl-BcQ4n7Z0cached0example00000000",
        (2006, 1920, 0, 300, 0),
        GPT_4O,
        "0.005615",
        context=("default", False),
    ),
    # 134 x 1.10 + 1408 x 0.55 + 2210 completion (1856 of it reasoning) x 4.40
    # = 147.4 + 774.4 + 9724
    Case(
        "openai_chat_stream_usage_chunk",
        "openai",
        "o3-mini-2025-01-31",
        "chatcmpl-BcQ9streamusage00000000000",
        (1542, 1408, 0, 2210, 1856),
        O3_MINI,
        "0.0106458",
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
    # 75 x 1.10 + 1186 output (1024 reasoning) x 4.40 = 82.5 + 5218.4
    Case(
        "openai_responses_reasoning",
        "openai",
        "o4-mini-2025-04-16",
        "resp_6820f382ee1c8191bc096bee70894d040ac5ba57aafcbac7",
        (75, 0, 0, 1186, 1024),
        O4_MINI,
        "0.0053009",
    ),
    # input 2048 includes 1536 cached: 512 x 2.00 + 1536 x 0.50 + 120 x 8.00 = 1024 + 768 + 960
    Case(
        "openai_responses_completed_event",
        "openai",
        "gpt-4.1-2025-04-14",
        "resp_123completed",
        (2048, 1536, 0, 120, 0),
        GPT_4_1,
        "0.002752",
    ),
    # 2095 x 3.00 + 503 x 15.00 = 6285 + 7545
    Case(
        "anthropic_message",
        "anthropic",
        "claude-3-7-sonnet-20250219",
        "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        (2095, 0, 0, 503, 0),
        SONNET,
        "0.01383",
    ),
    # input_tokens 21 excludes the 188086 read: 21 x 3.00 + 188086 x 0.30 + 393 x 15.00
    # = 63 + 56425.8 + 5895
    Case(
        "anthropic_cache_read",
        "anthropic",
        "claude-sonnet-4-20250514",
        "msg_01CacheRead000000000000000",
        (188107, 188086, 0, 393, 0),
        SONNET,
        "0.0623838",
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
    # thinking is inside output_tokens: 1500 x 3.00 + 3200 x 15.00 = 4500 + 48000
    Case(
        "anthropic_thinking",
        "anthropic",
        "claude-3-7-sonnet-20250219",
        "msg_01ThinkingExample000000000",
        (1500, 0, 0, 3200, 0),
        SONNET,
        "0.0525",
    ),
    # 8 x 0.10 + 312 x 0.40 = 0.8 + 124.8
    Case(
        "gemini_generate_content",
        "google",
        "gemini-2.0-flash",
        "nEJHaKXWNvGUmNkPj7LN-Ak",
        (8, 0, 0, 312, 0),
        GEMINI_20_FLASH,
        "0.0001256",
    ),
    # thoughts are apart from candidates: 11 x 0.30 + (402 + 1163) x 2.50 = 3.3 + 3912.5
    Case(
        "gemini_thinking",
        "google",
        "gemini-2.5-flash",
        "T0lHaNy7LYmSmNkPhfG-uQk",
        (11, 0, 0, 1565, 1163),
        GEMINI_25_FLASH,
        "0.0039158",
    ),
    # prompt 12034 includes 11980 cached; tool-use prompt 350 is apart:
    # (12034 - 11980 + 350) x 1.25 + 11980 x 0.3125 + (210 + 96) x 10.00 = 505 + 3743.75 + 3060
    Case(
        "gemini_cached_tools",
        "google",
        "gemini-2.5-pro",
        "Yn5KaIHmB4-Vm9IPx4CT8Ak",
        (12384, 11980, 0, 306, 96),
        GEMINI_25_PRO,
        "0.00730875",
    ),
    # snake_case dump: 20 x 0.30 + (35 + 40) x 2.50 = 6 + 187.5
    Case(
        "gemini_sdk_dump",
        "google",
        "gemini-2.5-flash",
        "b5FKaL2tKIWQmNkP0Ya8yQU",
        (20, 0, 0, 75, 40),
        GEMINI_25_FLASH,
        "0.0001935",
    ),
    # 30 x 3.00 + 628 x 15.00 = 90 + 9420
    Case(
        "bedrock_converse",
        "aws",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "5f0e4a3c-8a51-4b3c-9a0e-7c1d2e3f4a5b",
        (30, 0, 0, 628, 0),
        SONNET,
        "0.00951",
        call={"model": "anthropic.claude-3-5-sonnet-20240620-v1:0"},
    ),
    # inputTokens 14 excludes both cache counts, each read once (not once per spelling):
    # 14 x 3.00 + 1800 x 0.30 + 1200 x 3.75 + 180 x 15.00 = 42 + 540 + 4500 + 2700
    Case(
        "bedrock_converse_cache",
        "aws",
        "us.anthropic.claude-sonnet-4-20250514-v1:0",
        "0b6c3d2e-1f4a-4e5b-8c7d-9e0f1a2b3c4d",
        (3014, 1800, 1200, 180, 0),
        SONNET,
        "0.007782",
        call={"model": "us.anthropic.claude-sonnet-4-20250514-v1:0"},
    ),
    # 12 x 0.06 + 94 x 0.24 = 0.72 + 22.56
    Case(
        "bedrock_converse_stream",
        "aws",
        "amazon.nova-lite-v1:0",
        "bedrock-stream-req-1",
        (12, 0, 0, 94, 0),
        NOVA_LITE,
        "0.00002328",
        call={"model": "amazon.nova-lite-v1:0", "request_id": "bedrock-stream-req-1"},
    ),
    # same counts as openai_chat_cached, from span attributes
    Case(
        "otel_genai_span",
        "openai",
        "gpt-4o-2024-08-06",
        "chatcmpl-otelspan000000000000000",
        (2006, 1920, 0, 300, 0),
        GPT_4O,
        "0.005615",
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
    # as anthropic_cache_write_ttl: prompt_tokens 2404 already holds the 556 written
    Case(
        "litellm_anthropic_current",
        "anthropic",
        "claude-sonnet-4-20250514",
        "9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a5b4",
        (2404, 1800, 556, 503, 0),
        SONNET,
        "0.010314",
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
    # 950 x 0.15 + 120 x 0.60 = 142.5 + 72
    Case(
        "openai_chat_default_tier_requested_auto",
        "openai",
        "gpt-4o-mini-2024-07-18",
        "chatcmpl-CAuto0000000000000000000000",
        (950, 0, 0, 120, 0),
        GPT_4O_MINI,
        "0.0002145",
        call={"service_tier": "auto"},
        context=("default", False),
    ),
    # writes inside prompt_tokens: 1000 x 2.00 + 2000 x 0.50 + 3000 x 2.00 + 200 x 8.00
    Case(
        "openai_chat_cache_write",
        "openai",
        "gpt-4.1-2025-04-14",
        "chatcmpl-CWrite000000000000000000000",
        (6000, 2000, 3000, 200, 0),
        GPT_4_1,
        "0.0106",
    ),
    # flex: 1104 x 0.55 + 4096 x 0.1375 + 3300 (2944 reasoning) x 2.20 = 607.2 + 563.2 + 7260
    Case(
        "openai_responses_flex",
        "openai",
        "o4-mini-2025-04-16",
        "resp_flex0000000000000000000000000000000000000000",
        (5200, 4096, 0, 3300, 2944),
        O4_MINI_FLEX,
        "0.0084304",
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
    # thinking_tokens are part of output_tokens: 2100 x 3.00 + 4800 x 15.00 = 6300 + 72000
    Case(
        "anthropic_thinking_tokens",
        "anthropic",
        "claude-sonnet-4-5-20250929",
        "msg_01ThinkDetail00000000000000",
        (2100, 0, 0, 4800, 3900),
        SONNET,
        "0.0783",
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
    # flex: 4000 x 0.625 + 16000 x 0.15625 + (500 + 1500 thoughts) x 5.00 = 2500 + 2500 + 10000
    Case(
        "gemini_vertex_flex",
        "google",
        "gemini-2.5-pro",
        "vflex-resp-0001",
        (20000, 16000, 0, 2000, 1500),
        GEMINI_25_PRO_HALF,
        "0.015",
        context=("flex", False),
    ),
    # the last chunk's cumulative usage, not the sum: 64 x 0.10 + 30 x 0.40 = 6.4 + 12
    Case(
        "gemini_stream_events",
        "google",
        "gemini-2.0-flash",
        "gstream-0001",
        (64, 0, 0, 30, 0),
        GEMINI_20_FLASH,
        "0.0000184",
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


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def test_every_fixture_has_a_case_and_names_its_documentation() -> None:
    names = {path.stem for path in FIXTURES.glob("*.json")}
    assert names == {case.fixture for case in CASES}
    for name in names:
        fixture = load(name)
        assert fixture["source"].startswith("https://"), name
        assert fixture["format"] in FORMATS, name


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
    vertex = normalize("gemini", load("gemini_cached_tools")["body"], tenant_id="t")
    assert UsageEvent.model_validate(vertex).timestamp == datetime(
        2025, 6, 12, 8, 15, 30, 123456, tzinfo=UTC
    )
    bedrock = normalize(
        "bedrock", load("bedrock_converse")["body"], tenant_id="t", model="amazon.nova-lite-v1:0"
    )
    assert UsageEvent.model_validate(bedrock).timestamp == datetime(
        2025, 6, 10, 9, 12, 44, tzinfo=UTC
    )


def test_side_information_is_read_from_the_bodies() -> None:
    bedrock = UsageEvent.model_validate(
        normalize("bedrock", load("bedrock_converse_cache")["body"], tenant_id="t", model="m")
    )
    assert (bedrock.latency_ms, bedrock.status_code, bedrock.retry_count) == (2210, 200, 1)
    assert bedrock.cache_write_1h_tokens == 1200

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


def test_datetime_text_in_every_form_a_source_writes_is_read() -> None:
    naive = UsageEvent.model_validate(
        normalize("litellm", load("litellm_datetime_strings")["body"], tenant_id="t")
    )
    assert naive.timestamp == datetime(2025, 1, 24, 9, 20, 46, 847371, tzinfo=UTC)
    assert naive.latency_ms == 5  # 46.851954 - 46.847371 s
    assert naive.reported_cost_usd == Decimal("0.00022500000000000002")
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
