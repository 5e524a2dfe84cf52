"""The registry of real LLM inference request traces: each trace's name, file, public source,
sha256, columns, licence and citation (:data:`TRACES`).

Nothing here reads or downloads a file (that is :mod:`batchlab.datasets`, which re-exports
:data:`TRACES` and :class:`TraceInfo`): the command line names the traces in its help and
checks a trace's checksum without loading the data stack.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TRACES", "TraceInfo"]

_AZURE_RAW = "https://raw.githubusercontent.com/Azure/AzurePublicDataset/master/data/"
_SARATHI_COMMIT = "72339db5b120614033b317880ad3a05a5e4c9415"
_SARATHI_RAW = (
    f"https://raw.githubusercontent.com/microsoft/sarathi-serve/{_SARATHI_COMMIT}"
    "/data/processed_traces/"
)
_SPLITWISE = (
    'Patel et al., "Splitwise: Efficient generative LLM inference using phase splitting", '
    "ISCA 2024. Data: Azure/AzurePublicDataset (AzureLLMInferenceTrace), CC-BY-4.0."
)


@dataclass(frozen=True)
class TraceInfo:
    """One registered trace file.

    ``columns`` are the CSV's columns; ``prompt_column`` / ``gen_column`` hold the prompt and
    output lengths (tokens) and ``time_column`` the wall-clock arrival time (or None when the trace
    has no times). ``n_rows`` is the number of data rows in the file.
    """

    name: str
    file: str
    url: str
    sha256: str
    columns: tuple[str, ...]
    prompt_column: str
    gen_column: str
    time_column: str | None
    id_prefix: str
    n_rows: int
    licence: str
    citation: str
    description: str


def _azure(kind: str, sha256: str, n_rows: int, description: str) -> TraceInfo:
    """An Azure LLM inference trace of 2023-11-16 (``kind``: ``conv`` or ``code``)."""
    file = f"AzureLLMInferenceTrace_{kind}.csv"
    return TraceInfo(
        name=f"azure-{kind}-2023",
        file=file,
        url=_AZURE_RAW + file,
        sha256=sha256,
        columns=("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
        prompt_column="ContextTokens",
        gen_column="GeneratedTokens",
        time_column="TIMESTAMP",
        id_prefix=f"azure-{kind}",
        n_rows=n_rows,
        licence="CC-BY-4.0",
        citation=_SPLITWISE,
        description=description,
    )


TRACES: dict[str, TraceInfo] = {
    "azure-conv-2023": _azure(
        "conv",
        "2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8",
        19_366,
        "Azure OpenAI conversation service, 2023-11-16, about 58 min, about 5.5 req/s, "
        "arrivals close to Poisson.",
    ),
    "azure-code-2023": _azure(
        "code",
        "54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6",
        8_819,
        "Azure code-completion service, 2023-11-16, about 57 min, very bursty arrivals, "
        "long prompts, short outputs.",
    ),
    "sharegpt-lengths": TraceInfo(
        name="sharegpt-lengths",
        file="sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
        url=_SARATHI_RAW + "sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
        sha256="6d6c296302a853e2669a674a96f269283e60c57e60363bd450588a1066919f9f",
        columns=("num_prefill_tokens", "num_decode_tokens", "num_total_tokens", "pd_ratio"),
        prompt_column="num_prefill_tokens",
        gen_column="num_decode_tokens",
        time_column=None,
        id_prefix="sharegpt",
        n_rows=30_731,
        licence="Apache-2.0 (file); the underlying conversations are unlicensed, only counts here",
        citation=(
            "ShareGPT conversation lengths (Llama-2 tokenizer), from microsoft/sarathi-serve "
            f"commit {_SARATHI_COMMIT}, data/processed_traces/ (default length trace of the "
            "Vidur simulator), Apache-2.0."
        ),
        description=(
            "ShareGPT conversations, token counts only, no timestamps; total capped at 8,192, "
            "output at 1,024."
        ),
    ),
}
