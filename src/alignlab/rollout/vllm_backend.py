"""vLLM rollout backend: a vLLM engine in this process samples; the policy's weights are pushed
into it after every PPO update. Imported only when ``rollout_backend="vllm"`` (needs CUDA and
the ``vllm`` package; ``rollout.backends.vllm_unavailable_reason`` says why not).

Sampling matches the transformers backend: full-vocabulary softmax at ``temperature`` (no
top-k/top-p/min-p, no penalties), stop at the first EOS (kept in the response) or after
``max_new_tokens``. The engine is built with ``logprobs_mode="processed_logprobs"`` so the
returned log-probs are those of the tempered distribution actually sampled from (vLLM's
default reports the untempered ones); on a vLLM too old for that option, log-probs are only
returned at temperature 1.

Weights: the engine starts from the policy's folder (``policy.name_or_path``) in the policy's
dtype and then receives the in-memory tensors (``sync_weights``) through the model's own
``load_weights``, which maps Hugging Face parameter names to vLLM's fused layout. The engine
core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so its model is reachable.
Single process only: under DDP/FSDP every rank would need its own engine and gathered weights.
"""

from __future__ import annotations

import os

import torch

from alignlab.rollout.layout import Rollout, assemble_rollout


class VLLMBackend:
    def __init__(
        self,
        policy: torch.nn.Module,
        tokenizer,
        *,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.3,
        seed: int = 0,
    ):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in-process: weights can be pushed
        from vllm import LLM

        path = getattr(policy, "name_or_path", "") or getattr(policy.config, "_name_or_path", "")
        if not path:
            raise ValueError("vLLM backend: the policy has no name_or_path (load it from a folder or hub id)")
        self.tokenizer = tokenizer
        self.device = next(policy.parameters()).device
        kwargs = dict(
            model=path,
            dtype=str(next(policy.parameters()).dtype).removeprefix("torch."),
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enforce_eager=True,  # small models: CUDA-graph capture costs more than it saves
            skip_tokenizer_init=True,  # token ids in, token ids out; our tokenizer decodes
            seed=seed,
        )
        try:
            self.llm = LLM(**kwargs, logprobs_mode="processed_logprobs")
            self.tempered_logprobs = True
        except TypeError:  # vLLM without logprobs_mode: log-probs are of the untempered logits
            self.llm = LLM(**kwargs)
            self.tempered_logprobs = False
        self.sync_weights(policy)  # the policy in memory may differ from its folder (resume, tests)

    def generate(
        self, prompt_ids: list[list[int]], *, max_new_tokens: int, temperature: float, seed: int | None = None
    ) -> Rollout:
        from vllm import SamplingParams

        if temperature <= 0:
            raise ValueError("the vLLM rollout backend samples: temperature must be > 0")
        eos = torch.as_tensor(self.tokenizer.eos_token_id).reshape(-1).tolist()
        want_logprobs = self.tempered_logprobs or temperature == 1.0
        params = [
            SamplingParams(
                n=1,
                temperature=temperature,
                top_p=1.0,
                top_k=-1,
                min_p=0.0,
                repetition_penalty=1.0,
                max_tokens=max_new_tokens,
                stop_token_ids=eos,
                ignore_eos=False,
                detokenize=False,
                logprobs=0 if want_logprobs else None,  # 0: just the sampled token's
                seed=None if seed is None else seed + i,
            )  # per request: reproducible, order-free
            for i in range(len(prompt_ids))
        ]
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompt_ids], params, use_tqdm=False)
        results = []
        for p, out in zip(prompt_ids, outs):
            c = out.outputs[0]
            tokens = torch.tensor(list(c.token_ids), dtype=torch.long)
            lps = None
            if want_logprobs:
                lps = torch.tensor([step[t].logprob for t, step in zip(c.token_ids, c.logprobs)], dtype=torch.float32)
            results.append((list(p), tokens, lps))
        return assemble_rollout(
            results,
            self.tokenizer,
            self.tokenizer.eos_token_id,
            self.tokenizer.pad_token_id,
            self.device,
            return_logprobs=want_logprobs,
        )

    def _engine_model(self):
        """The engine's torch model, across vLLM versions (None if this vLLM hides it)."""
        executor = getattr(self.llm.llm_engine, "model_executor", None)
        worker = getattr(executor, "driver_worker", None)
        for runner_owner in (worker, getattr(worker, "worker", None)):
            runner = getattr(runner_owner, "model_runner", None)
            if runner is not None and hasattr(runner, "model"):
                return runner.model
        return None

    @torch.no_grad()
    def sync_weights(self, policy: torch.nn.Module) -> None:
        weights = list(policy.state_dict().items())
        model = self._engine_model()
        if model is not None:
            model.load_weights(weights)
        elif hasattr(self.llm, "apply_model"):  # newer vLLM: run a function on the model in each worker
            self.llm.apply_model(lambda m: m.load_weights(weights))
        else:
            import vllm

            raise RuntimeError(f"vLLM {vllm.__version__}: cannot reach the engine's model to push weights")
        self.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights
