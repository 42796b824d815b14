"""What the probe asks: the same few deterministic prompts on every route, in every API shape."""

from __future__ import annotations

from sse_audit_proxy.tools import scenarios

SEED = 4242  # with temperature 0: the streamed and the non-streamed answer should agree
MAX_TOKENS = 120  # bounds the cost on a real route; long enough to see token-by-token delivery
SHORT_MAX_TOKENS = 16

# Long enough to stream many tokens; plain enough that every model answers it the same way.
COUNT = "Count from one to thirty in English words, separated by commas, and nothing else."
COUNT_SHORT = "Count from one to ten in English words, separated by commas, and nothing else."
WEATHER = "What is the weather in Paris right now? Use the get_weather tool."
READY = "Reply with the single word: ready."

TOOL = scenarios.TOOL  # get_weather(city, unit), as the traffic generator offers it
TOOL_RESULT = '{"city": "Paris", "temperature": 18, "unit": "celsius", "conditions": "clear"}'
