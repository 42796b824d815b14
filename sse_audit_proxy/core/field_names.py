"""The field names of the streaming protocols: what a frame skeleton keeps of an object's keys.

Pure data. A JSON object's keys are either the protocol's own (`choices`, `delta`,
`prompt_tokens`) or data: legacy Completions' `top_logprobs` are objects keyed by the token
text itself, tool inputs and `metadata` are keyed by whatever the caller chose. A key that
looks like a word may still be the model's text ("Patient", "diagnosis"), so a skeleton keeps
a key only when it is one of these names, and writes every other one as its length.

The names: every field of OpenAI's Chat Completions, Completions, Responses, transcription,
image and Assistants run streams and of Anthropic's Messages stream as their Python SDKs type
them (tests/unit/test_skeleton_keys.py checks the installed SDKs against this list), and the
documented extensions of the servers and gateways the proxy is put in front of. A name missing
here costs only legibility: its key is shown as `"<N>"`.
"""

from __future__ import annotations

# OpenAI Chat Completions, Completions and Responses; Anthropic Messages (their SDKs).
_SDKS = """
accepted_prediction_tokens access_programs acknowledged_safety_checks action actions
allowed_callers allowed_domains allowed_tools always annotation annotation_index annotations
approval_request_id approve arguments async attributes audio audio_tokens authorization background
button bytes cache_creation cache_creation_input_tokens cache_miss_reason cache_missed_input_tokens
cache_missed_tokens cache_read_input_tokens cache_write_tokens cache_write_tokens_details
cached_image_tokens cached_text_tokens cached_tokens cached_tokens_details call_id caller caller_id
categories category category_applied_input_types category_scores choices citation citations
cited_text city code command command_index commands comparison_response_id
comparison_reusable_tokens completed_at completion_tokens completion_tokens_details complexity
connector_id container container_id content content_block content_index context context_compression
conversation country created created_at created_by custom cyber data defer_loading definition delta
description detail detailed_explanation diagnostics diff display_height display_width
document_index document_title domain domain_secrets effort embedding_weight enabled
encrypted_content encrypted_index encrypted_stdout end_block_index end_char_index end_index
end_page_number env environment ephemeral_1h_input_tokens ephemeral_5m_input_tokens error
error_code error_message error_type execution exit_code expires_at explanation external_web_access
file_data file_id file_ids file_type file_url filename filters fingerprint finish_reason flagged
format frame_count frame_duration_ms function function_call generate_summary headers hybrid_search
id image image_gen image_tokens image_url incomplete_details index inference_geo input
input_fidelity input_image_mask input_schema input_tokens input_tokens_details
input_transformations instructions is_file_update item item_id key keys lines logprob logprobs logs
max_num_results max_output_length max_output_tokens max_tool_calls media_type memory_limit message
metadata misalignment mode model moderation moderation_details moderation_stage name namespace
network_policy never new_lines new_start num_lines num_requests obfuscation object old_lines
old_start operation outcome output output_compression output_format output_index output_schema
output_tokens output_tokens_details outputs page_age parallel_tool_calls param parameters part
partial_image_b64 partial_image_index partial_images partial_json path pattern
pending_safety_checks phase previous_response_id prompt prompt_cache_breakpoint
prompt_cache_diagnostics prompt_cache_key prompt_cache_options prompt_cache_retention prompt_tokens
prompt_tokens_details quality queries query ranker ranking_options read_only reason reasoning
reasoning_tokens refusal region rejected_prediction_tokens require_approval response result results
retrieved_at return_code review_target revised_prompt role safety_identifier schema score
score_threshold scroll_x scroll_y search_content_types search_context_size search_result_index
sequence_number server_description server_label server_tool_use server_url service_tier signature
size skill_id skills source sources speed start_block_index start_char_index start_index start_line
start_page_number status stderr stdout steer stop_details stop_reason stop_sequence strict summary
summary_index svg svg_usage syntax system_fingerprint temperature text text_offset text_tokens
text_weight thinking thinking_tokens timeout_ms timezone title token token_logprobs tokens
tool_calls tool_choice tool_id tool_name tool_names tool_references tool_usage tool_use_id tools
toolset_name top_logprobs top_p total_lines total_tokens transcript truncation ttl ttl_12h_tokens
ttl_30m_tokens tunnel_id type url url_citation usage user user_location value variables
vector_store_ids verbosity version web_fetch_requests web_search web_search_requests
working_directory x y
"""
# vLLM and SGLang (token IDs on request, KV transfer, reasoning parsers).
_VLLM = """
prompt_token_ids token_ids prompt_logprobs kv_transfer_params reasoning_content num_cached_tokens
decoded_token rank matched_stop
"""
# Azure OpenAI content filtering.
_AZURE = """
prompt_filter_results prompt_index content_filter_results content_filter_result
content_filter_offsets start_offset end_offset check_offset hate self_harm sexual violence
jailbreak indirect_attack profanity protected_material_text protected_material_code
custom_blocklists custom_topics ungrounded_material filtered severity detected details license URL
innererror
"""
# Groq and Cerebras (timing blocks).
_GROQ = """
x_groq queue_time prompt_time completion_time total_time usage_breakdown models executed_tools
search_results seed time_info
"""
# OpenRouter.
_OPENROUTER = """
provider native_finish_reason reasoning_details cost is_byok cost_details upstream_inference_cost
upstream_inference_prompt_cost upstream_inference_completions_cost provider_name raw video_tokens
"""
# llama.cpp server.
_LLAMA_CPP = """
timings cache_n prompt_n prompt_ms prompt_per_token_ms prompt_per_second predicted_n predicted_ms
predicted_per_token_ms predicted_per_second draft_n draft_n_accepted __verbose
completion_probabilities probs tok_str prob top_probs id_slot stop stop_type stopping_word
stopped_eos stopped_word stopped_limit tokens_predicted tokens_evaluated tokens_cached truncated
has_new_line generation_settings n_probs
"""
# Text Generation Inference, Together, Fireworks.
_TGI = """
special generated_text generated_tokens top_tokens best_of_sequences prefill warnings perf_metrics
input_length seed
raw_output
"""
# DeepSeek, Mistral, xAI, Perplexity, Gemini's OpenAI endpoint.
_OTHERS = """
prompt_cache_hit_tokens prompt_cache_miss_tokens prompt_audio_seconds num_sources_used date
last_updated snippet extra_content google thought thought_signature
"""
# LiteLLM.
_LITELLM = """
provider_specific_fields thinking_blocks reasoning_items images cache_creation_tokens
cache_creation_token_details tool_use_tokens initial_prompt_tokens
"""
# Anthropic on Bedrock and Vertex, context management.
_BEDROCK = """
amazon-bedrock-invocationMetrics inputTokenCount outputTokenCount invocationLatency
firstByteLatency cacheReadInputTokenCount cacheWriteInputTokenCount context_management
applied_edits cleared_input_tokens cleared_tool_uses cleared_thinking_turns
"""
# Ollama's native API (`/api/chat`, `/api/generate`: JSON lines, `done` its end).
_OLLAMA = """
model message response done done_reason total_duration load_duration prompt_eval_count
prompt_eval_duration eval_count eval_duration
"""
# Cohere's native chat stream (`/v2/chat`).
_COHERE = """
tool_plan billed_units search_units classifications citations sources
is_finished event_type generation_id tool_call_delta response_id chat_history api_version meta
search_queries search_results documents
"""
# Gemini's native stream (`:streamGenerateContent`), Vertex AI's too.
_GEMINI = """
candidates content parts text role finishReason index safetyRatings category probability blocked
usageMetadata promptTokenCount candidatesTokenCount totalTokenCount thoughtsTokenCount
cachedContentTokenCount toolUsePromptTokenCount promptTokensDetails candidatesTokensDetails
cacheTokensDetails toolUsePromptTokensDetails modality tokenCount modelVersion responseId
createTime promptFeedback blockReason functionCall name args id thought thoughtSignature
inlineData fileData mimeType fileUri executableCode codeExecutionResult language outcome output
citationMetadata citations startIndex endIndex uri license groundingMetadata avgLogprobs
finishMessage trafficType
"""
# Cloudflare Workers AI (`/ai/run/@cf/...`: `p` pads each frame) and its API's error bodies.
_WORKERS_AI = """
p success result
"""
# IBM watsonx.ai's chat stream (`/ml/v1/text/chat_stream`) and its error bodies.
_WATSONX = """
model_id model_version trace
"""
# OpenAI's transcription, image and Assistants run streams (their SDK types), vLLM's
# transcription chunks.
_MEDIA_AND_RUNS = """
assistant_id attachments b64_json cancelled_at code_interpreter end event expired_at failed_at
file_citation file_name file_path file_search image_file incomplete_at input_token_details
json_schema languages last_error last_messages max_completion_tokens max_prompt_tokens
message_creation message_id quote required_action response_format run_id segment_id speaker
start started_at step_details submit_tool_outputs thread_id tool_resources truncation_strategy
partial_image_index output_format quality size
"""
# Responses fields the SDK's models leave out, and error bodies of gateways.
_EXTRA = """
store status_code retry_after request_id errors stop_sequence_type token_id tokenId
"""
FIELD_NAMES = frozenset(
    (
        _SDKS
        + _VLLM
        + _AZURE
        + _GROQ
        + _OPENROUTER
        + _LLAMA_CPP
        + _TGI
        + _OTHERS
        + _LITELLM
        + _BEDROCK
        + _OLLAMA
        + _COHERE
        + _GEMINI
        + _WORKERS_AI
        + _WATSONX
        + _MEDIA_AND_RUNS
        + _EXTRA
    ).split()
)


# Keys whose integers are text in another form: token IDs (a public tokenizer turns them back
# into the prompt or the completion: vLLM's `prompt_token_ids` carry the whole prompt) and a
# token's UTF-8 `bytes` (Chat logprobs). Their integers are shown as 0; their count is kept.
TOKEN_NUMBERS = frozenset(
    {"bytes", "token_ids", "prompt_token_ids", "tokens", "token_id", "id", "context", "tokenId"}  # Gemini's
)

# Fields whose object is keyed by data, not by field names: legacy Completions' `top_logprobs`
# ({token text: logprob} per position), vLLM's `prompt_logprobs` ({token ID: ...}), the
# caller's `metadata`. Every key of such an object is data, a field name among them too (a
# token may be "text"). An object under `top_logprobs` whose `token` is a string is Chat's and
# llama.cpp's shape ({token, logprob, bytes}): keyed by field names. (In a map keyed by tokens,
# the value of a token "token" is its logprob, a number.)
DATA_MAPS = frozenset({"top_logprobs", "prompt_logprobs"})

# Fields whose value is data that a model or a client wrote, however it is shaped: Anthropic's
# tool_use `input` and Ollama's tool-call `arguments` are objects the model filled in, and a
# JSON schema (`parameters`, `schema`) echoed from the request is the client's. Their keys may
# be field names and their values may look like protocol words (`"status": "HIV-positive"`):
# in such a subtree no key, string or number is kept, only its shape.
# Gemini's `functionCall.args` and Responses' echoed `prompt.variables` are such objects too,
# and the client's `metadata` that a Responses stream echoes (whatever its keys: one named
# `token` made it look like a logprob, whose words are kept).
OPAQUE = frozenset(
    {"input", "arguments", "args", "parameters", "schema", "input_schema", "variables", "metadata"}
)

# Names of request fields (OpenAI's Chat, Completions, Responses, audio and image routes,
# Anthropic's Messages, and the extensions of vLLM, llama.cpp and OpenRouter): a request
# shape in evidence shows a top-level key, and a key of `stream_options`, only when it is one
# of these or of FIELD_NAMES. Any other key is the client's own word: `"<N>"`.
REQUEST_FIELDS = frozenset(
    {
        "messages", "stream", "stream_options", "include_usage", "continuous_usage_stats", "n",
        "max_tokens", "max_completion_tokens", "max_output_tokens", "temperature", "top_p",
        "top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty",
        "logit_bias", "logprobs", "top_logprobs", "seed", "stop", "stop_sequences", "user",
        "metadata", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call",
        "response_format", "reasoning_effort", "reasoning", "verbosity", "modalities", "audio",
        "prediction", "web_search_options", "service_tier", "store", "safety_identifier",
        "prompt_cache_key", "input", "instructions", "previous_response_id", "conversation",
        "background", "include", "text", "truncation", "max_tool_calls", "system", "thinking",
        "container", "mcp_servers", "prompt", "suffix", "echo", "best_of", "file", "language",
        "voice", "speed", "response_mime_type", "stream_format", "timestamp_granularities",
        "chunking_strategy", "size", "quality", "style", "image", "mask", "output_format",
        "output_compression", "partial_images", "moderation", "guided_json", "guided_regex",
        "guided_choice", "guided_grammar", "ignore_eos", "min_tokens", "skip_special_tokens",
        "add_generation_prompt", "chat_template_kwargs", "cache_prompt", "n_predict",
        "transforms", "models", "route", "provider", "usage", "plugins", "extra_body",
        "include_stop_str_in_output", "stop_token_ids", "use_beam_search", "length_penalty",
        "priority", "structured_outputs", "chat_template", "truncate_prompt_tokens",
        "repeat_penalty", "repeat_last_n", "mirostat", "mirostat_tau", "mirostat_eta", "grammar",
        "json_schema", "typical_p", "n_keep", "n_probs", "top_a", "include_reasoning",
        "reasoning_format", "safe_prompt", "random_seed", "data_sources", "options",
        "keep_alive", "think", "format", "raw", "images", "tool_config", "documents",
    }
)  # fmt: skip
