"""Typer option declarations shared by several ``jbench`` commands (eval and compare take the same run options),
declared once so a flag means the same thing, with the same help, everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from jbench.plan import FALLBACK_PROMPT_VERSION

DataDirOpt = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Folder with the raw data files (default: $JBENCH_DATA_DIR; with the embedded tiny model "
                       "and no data dir, the bundled sample).", show_default=False)]
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="Local path or hub id of a causal LM. Omitted or 'tiny': the embedded tiny model "
                          "(built offline, deterministically, in seconds).")]
LimitOpt = Annotated[Optional[float], typer.Option(
    "--limit", help="Keep the first N documents after the shuffle (a value below 1 is a fraction).")]
TasksOpt = Annotated[Optional[list[str]], typer.Option(
    "--tasks", "-t", help="Comma-separated task or family names; repeatable (the lists are joined). Default: "
                          "the 6-task suite jcommonsenseqa,jnli,marc_ja,jsquad,jaqket_v2,xwinograd_ja.")]
ShotsOpt = Annotated[Optional[str], typer.Option(
    "--num-fewshot", "--num_fewshot", help="Shots per task, comma-separated in task order, or one value for all "
                          "(default: 3,3,3,2,1,0 for the suite, else each task's default).")]
PromptOpt = Annotated[Optional[str], typer.Option(
    "--prompt-version", "-p", help="Prompt version for family names (e.g. 0.3). Default: the model preset's, "
                                   f"else {FALLBACK_PROMPT_VERSION}. A full task name (jnli-1.3-0.4) already names "
                                   "its prompt version.")]
BatchOpt = Annotated[Optional[str], typer.Option(
    "--batch-size", "--batch_size", metavar="auto|auto:N|N",
    help="Rows per forward pass (a row is one request, or several that share a prompt prefix when they are packed). "
         "auto (the default): sized for every batch from the device's TOTAL memory, the model's size and shape and "
         "the batch's sequence lengths -- never from the memory that happens to be free, so a repeated or resumed "
         "run batches, and scores, exactly alike. auto:N: the same, but never more than N rows (lm-eval's auto:N "
         "re-detects its size N times; jbench sizes every batch anyway, so N is a cap, like lm-eval's "
         "--max_batch_size). N: at most N rows. An out-of-memory error halves the batch (recorded). llama.cpp "
         "(gguf) scores one request at a time. results.json config.batch records the setting and the largest "
         "batch run.", show_default=False)]
ModelArgsOpt = Annotated[Optional[list[str]], typer.Option(
    "--model-args", "--model_args", metavar="K=V,...",
    help="Arguments for the model loader, lm-eval style: k=v,k2=v2 (true/false, none, ints, floats, 'quoted text', "
         "and dict/list literals such as max_memory={0:'20GiB',cpu:'60GiB'}). transformers: from_pretrained "
         "(attn_implementation, device_map, max_memory, subfolder, low_cpu_mem_usage...); gguf: llama.cpp's "
         "Llama(...) (flash_attn, use_mmap, n_gpu_layers, n_threads, n_batch...). revision= and max_length= set "
         "jbench's own revision and context length. Keys jbench sets itself (dtype, device, trust_remote_code, "
         "load_in_8bit...) are refused, naming the option to use. Repeatable (merged; a key given twice with "
         "different values is refused). Recorded in results.json and part of the request cache's key; the default "
         "run name gets -ma<hash> (arguments that only place files or memory, such as low_cpu_mem_usage, leave it "
         "alone).", show_default=False)]
RevisionOpt = Annotated[Optional[str], typer.Option(
    "--revision", help="Branch, tag or commit of a Hub --model (default: main). The commit it resolves to is loaded, "
                       "recorded (results.json config.revision_commit) and is the run's weights fingerprint, so "
                       "cached answers never mix commits; the default run name gets -rev-<revision>. Local folders "
                       "are fingerprinted by their files instead.",
    show_default=False)]
DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", help="auto (default: cuda if visible, else mps, else cpu; the choice is printed and stored in the "
                     "run), or cpu, cuda, cuda:1, mps. Without a preset, a model loads in its checkpoint's dtype on a "
                     "GPU and in fp32 on CPU.", show_default=False)]
BackendOpt = Annotated[Optional[str], typer.Option(
    "--backend", help="The engine: hf (default: transformers; llama.cpp for --variant gguf) or vllm (the vllm "
                      "extra; plain dtypes and pre-quantized gptq/awq through vLLM's kernels). Recorded in the run; "
                      "its own arguments pass through --model-args (see README).", show_default=False)]
OutputDirOpt = Annotated[Path, typer.Option(
    "--output-dir", "--output_path", help="Where runs are stored: each run is a folder <output-dir>/<run-name>/ "
                                          "(--output_path is lm-eval's spelling: lm-eval also writes one folder per "
                                          "model under it).")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars with ETA on stderr.")]
TokenizerMismatchOpt = Annotated[bool, typer.Option(
    "--allow-tokenizer-mismatch", help="Compare even if the tokenizer identities differ (or one is not recorded); "
                                       "the report then shows the difference at its top. Without it, that is an "
                                       "error.")]
BaselinesDirOpt = Annotated[Path, typer.Option("--baselines-dir", help="Where baselines live.")]
ChatTemplateOpt = Annotated[Optional[bool], typer.Option(
    "--apply-chat-template/--no-apply-chat-template", "--apply_chat_template",
    help="Render every request through the model tokenizer's chat template, as lm-eval's --apply_chat_template "
         "does (the task description becomes the system turn, the question a user turn, the answer is scored "
         "after the opened assistant turn). Task names get '+chat' and default run names '-chat', so the numbers "
         "are never taken for reference-prompt ones. Default for eval: the model preset's choice (off for every "
         "built-in preset); for prompts: off.", show_default=False)]
SystemInstructionOpt = Annotated[Optional[str], typer.Option(
    "--system-instruction", "--system_instruction",
    help="With --apply-chat-template: text for the system turn, before the task description (a template without "
         "a system role drops the system turn, as lm-eval does; the samples' notes say so).")]
MultiturnOpt = Annotated[Optional[bool], typer.Option(
    "--fewshot-as-multiturn/--no-fewshot-as-multiturn", "--fewshot_as_multiturn",
    help="With --apply-chat-template: each shot is a user turn and an assistant turn (the default, as in lm-eval "
         "0.4.13); --no-fewshot-as-multiturn puts the shots and the question in one user turn.", show_default=False)]
OriginalOpt = Annotated[Optional[str], typer.Option(
    "--original", metavar="fp32|fp16|bf16|auto",
    help="The original's dtype (auto: the checkpoint's). The quantized variants then compute in it too, and their "
         "run folders end in -<dtype>; the report names it. Default: the model preset's dtype (fp32 for unknown "
         "models), with the variants computing in float32.", show_default=False)]
WandbArgsOpt = Annotated[Optional[str], typer.Option(
    "--wandb-args", "--wandb_args", metavar="K=V,...",
    help="Log the finished run to Weights & Biases: wandb.init arguments in lm-eval's syntax, e.g. "
         "project=jbench,name=my-run,job_type=eval (WANDB_MODE=offline logs to local files). Logs llm-jp-eval's "
         "leaderboard_table / radar_table / output_table, the card table and the averages. Needs the wandb extra. "
         "config={'lr': 0.1} (a dict literal, or a YAML file) joins jbench's run config. Checked before the model "
         "loads: keys, value types and, unless offline, that an API key is available (wandb login / WANDB_API_KEY).",
    show_default=False)]
