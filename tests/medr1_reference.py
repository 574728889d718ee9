# ruff: noqa: BLE001, S110, E501 - a transcription of Med-R1's code, kept as it is published
"""Med-R1's functions transcribed from its published code (github.com/Yuxiang-Lai117/Med-R1 at
88d76c7, Apache-2.0), as close to verbatim as a module allows: the yardstick that
tests/test_medr1_fidelity.py holds medr1.task's `med-r1` variants to. Do not "fix" anything here.
"""

import math
import re

from math_verify import parse, verify


# src/r1-v/src/open_r1/grpo_vqa.py (accuracy_reward is the same in grpo_vqa_nothink.py); the
# DEBUG_MODE logging is left out.
def accuracy_reward(completions, solution, **kwargs):
    contents = [completion[0]["content"] for completion in completions]
    rewards = []
    for content, sol in zip(contents, solution):
        reward = 0.0
        try:
            answer = parse(content)
            if float(verify(answer, parse(sol))) > 0:
                reward = 1.0
        except Exception:
            pass
        if reward == 0.0:
            try:
                sol_match = re.search(r'<answer>(.*?)</answer>', sol)
                ground_truth = sol_match.group(1).strip() if sol_match else sol.strip()
                content_match = re.search(r'<answer>(.*?)</answer>', content)
                student_answer = content_match.group(1).strip() if content_match else content.strip()
                if student_answer == ground_truth:
                    reward = 1.0
            except Exception:
                pass
        rewards.append(reward)
    return rewards


# src/r1-v/src/open_r1/grpo_vqa.py
def format_reward_think(completions, **kwargs):
    pattern = r"<think>.*?</think>\s*<answer>.*?</answer>"
    completion_contents = [completion[0]["content"] for completion in completions]
    matches = [re.fullmatch(pattern, content, re.DOTALL) for content in completion_contents]
    return [1.0 if match else 0.0 for match in matches]


# src/r1-v/src/open_r1/grpo_vqa_nothink.py
def format_reward_nothink(completions, **kwargs):
    pattern = r"\s*<answer>.*?</answer>"
    completion_contents = [completion[0]["content"] for completion in completions]
    matches = [re.fullmatch(pattern, content, re.DOTALL) for content in completion_contents]
    return [1.0 if match else 0.0 for match in matches]


# src/eval_vqa/test_qwen2vl_vqa.py
def extract_option_answer(output_str):
    answer_pattern = r'<answer>\s*(\w+)\s*</answer>'
    match = re.search(answer_pattern, output_str)
    if match:
        return match.group(1)
    return None


def _ground_truth(solution):
    ground_truth_pattern = r'<answer>\s*(\w+)\s*</answer>'
    ground_truth_match = re.search(ground_truth_pattern, solution)
    return ground_truth_match.group(1)


# src/eval_vqa/test_qwen2vl_vqa.py (think), the loop after generation
def correct_qwen2vl_think(model_output, solution):
    model_answer = extract_option_answer(model_output)
    return model_answer is not None and model_answer == _ground_truth(solution)


# src/eval_vqa/test_qwen2vl_vqa_nothink.py and test_qwen2vl_vqa_zero_shot.py
def correct_qwen2vl_raw(model_output, solution):
    model_answer = model_output
    return model_answer is not None and model_answer == _ground_truth(solution)


# src/eval_vqa/test_qwen2_5vl_vqa_nothink.py
def correct_qwen2_5vl_nothink(model_output, solution):
    if "answer" in model_output:
        model_answer = extract_option_answer(model_output)
    else:
        model_answer = model_output
    return model_answer is not None and model_answer == _ground_truth(solution)


# Templates: grpo_vqa.py / grpo_vqa_nothink.py (training) and the evaluation scripts.
TRAIN_THINK = "{Question} Your task: 1. Think through the question step by step, enclose your reasoning process in <think>...</think> tags. 2. Then provide the correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags. 3. No extra information or text outside of these tags."
TRAIN_NOTHINK = "{Question} Your task: 1. Provide the correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags. 2. No extra information or text outside of this tag."
EVAL_THINK = "{Question} Think through the question step by step in <think>...</think> tags. Then provide the correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags."
EVAL_NOTHINK = "{Question} Provide the correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags."
EVAL_ZERO_SHOT = "{Question} Provide the correct single-letter choice (A, B, C, D,...)."


# src/r1-v/src/open_r1/sft.py convert_example (an example with no "system", as Med-R1's split records)
def convert_example(example):
    messages = []
    if "system" in example:
        messages.append({
            "role": "system",
            "content": [{"type": "text", "text": example["system"]}],
        })
    else:
        SYSTEM_PROMPT = (
            "Your task: Provide the correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags."
        )

        messages.append({
            "role": "system",
            "content": [{"type": "text", "text": SYSTEM_PROMPT}],
        })

    thinking = example.get("thinking")
    problem = example.get("problem")
    solution = example.get("solution")
    image = example.get("image")
    messages.append({
        "role": "user",
        "content": [
            {"type": "text", "text": problem},
            {"type": "image", "image": image},
            ]
    })
    messages.append({
        "role": "assistant",
        "content": f"{thinking}\n\n{solution}",
    })

    example["messages"] = messages
    return example


# sft.py collate_fn with its `processor` global passed in; images as qwen_vl_utils.process_vision_info gives them
def collate_fn(examples, processor, fetch_image):
    texts = [
        processor.apply_chat_template( convert_example(example)["messages"], tokenize=False, add_generation_prompt=True)
        for example in examples
    ]
    image_inputs = []
    for example in examples:
        imgs = [fetch_image(item) for message in example["messages"] if isinstance(message["content"], list)
                for item in message["content"] if "image" in item]
        image_inputs.append(imgs)
    batch = processor(
        text=texts,
        images=image_inputs,
        return_tensors="pt",
        padding=True,
    )
    labels = batch["input_ids"].clone()
    labels[labels == processor.tokenizer.pad_token_id] = -100
    image_token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    labels[labels == image_token_id] = -100
    batch["labels"] = labels

    return batch


# qwen_vl_utils/vision_process.py 0.0.10 (Med-R1's src/requirements.txt), which sft.py's process_vision_info calls
IMAGE_FACTOR = 28
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 16384 * 28 * 28


def smart_resize(height, width, factor=IMAGE_FACTOR, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS):
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {200}, got {max(height, width) / min(height, width)}"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def to_rgb(pil_image):
    from PIL import Image

    if pil_image.mode == 'RGBA':
        white_background = Image.new("RGB", pil_image.size, (255, 255, 255))
        white_background.paste(pil_image, mask=pil_image.split()[3])  # Use alpha channel as mask
        return white_background
    else:
        return pil_image.convert("RGB")


def fetch_image(ele):
    from PIL import Image

    image = ele["image"]
    if isinstance(image, Image.Image):
        image_obj = image
    elif image.startswith("file://"):  # the evaluation scripts name their images f"file://{i['image']}"
        image_obj = Image.open(image[7:])
    else:
        image_obj = Image.open(image)
    image = to_rgb(image_obj)
    width, height = image.size
    resized_height, resized_width = smart_resize(height, width)
    return image.resize((resized_width, resized_height))


# src/eval_vqa/test_qwen2vl_vqa_nothink.py:47-84 (test_qwen2vl_vqa.py, _zero_shot.py and the Qwen2.5-VL scripts alike,
# each with its template): one user turn, the image then the text, and the images as process_vision_info gives them
# (fetch_image of every image item, in order)
def evaluation_batch(data, processor, template=EVAL_NOTHINK):
    messages = []
    for i in data:
        message = [{
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "image": f"file://{i['image']}"
                },
                {
                    "type": "text",
                    "text": template.format(Question=i['problem'])
                }
            ]
        }]
        messages.append(message)
    text = [processor.apply_chat_template(msg, tokenize=False, add_generation_prompt=True) for msg in messages]
    image_inputs = [fetch_image(ele) for msg in messages for message in msg for ele in message["content"]
                    if "image" in ele]
    inputs = processor(
        text=text,
        images=image_inputs,
        padding=True,
        return_tensors="pt",
    )
    return inputs


# src/r1-v/src/open_r1/trainer/grpo_trainer.py:337-348, Qwen2VLGRPOTrainer._get_per_token_logps (`self` dropped).
# `mm_token_type_ids` is transformers 5's: it no longer finds the image tokens in input_ids itself, as the
# transformers Med-R1 pinned (336dc69d) did.
def get_per_token_logps(model, input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids=None):
    import torch

    logits = model(input_ids, attention_mask=attention_mask, pixel_values=pixel_values, image_grid_thw=image_grid_thw, mm_token_type_ids=mm_token_type_ids).logits  # (B, L, V)
    logits = logits[:, :-1, :]  # (B, L-1, V), exclude the last logit: it corresponds to the next token pred
    input_ids = input_ids[:, 1:]  # (B, L-1), exclude the first input ID since we don't have logits for it
    # Compute the log probabilities for the input tokens. Use a loop to reduce memory peak.
    per_token_logps = []
    for logits_row, input_ids_row in zip(logits, input_ids):
        log_probs = logits_row.log_softmax(dim=-1)
        token_log_prob = torch.gather(log_probs, dim=1, index=input_ids_row.unsqueeze(1)).squeeze(1)
        per_token_logps.append(token_log_prob)
    return torch.stack(per_token_logps)


# grpo_trainer.py:356-491, Qwen2VLGRPOTrainer.compute_loss from its generated ids on: the prompts' processor
# outputs (`prompt_mask`, `pixel_values`, `image_grid_thw`: one row or image per prompt, as :365-377 has them),
# `prompt_completion_ids` as `generate` returned them (:386) and `rewards_per_func` as :429-453 fills it are
# passed in; `self.` attributes are arguments (`mm_token_type_ids` as get_per_token_logps'); :391's repeat is kept,
# the rest of generation, the reward calls and the metric logging are left out. Returns the loss and, for the
# test, the advantages, the KL and the completion mask it used.
def compute_loss_after_generation(model, ref_model, prompt_completion_ids, prompt_length, prompt_mask, pixel_values,
                                  image_grid_thw, rewards_per_func, eos_token_id, num_generations, beta,
                                  mm_token_type_ids=None):
    import torch

    completion_ids = prompt_completion_ids[:, prompt_length:]  # :390-391 (:389's prompt_ids is not used after)
    prompt_mask = prompt_mask.repeat_interleave(num_generations, dim=0)

    # Mask everything after the first EOS token
    is_eos = completion_ids == eos_token_id
    device = completion_ids.device
    eos_idx = torch.full((is_eos.size(0),), is_eos.size(1), dtype=torch.long, device=device)
    eos_idx[is_eos.any(dim=1)] = is_eos.int().argmax(dim=1)[is_eos.any(dim=1)]
    sequence_indices = torch.arange(is_eos.size(1), device=device).expand(is_eos.size(0), -1)
    completion_mask = (sequence_indices <= eos_idx.unsqueeze(1)).int()

    # Concatenate prompt_mask with completion_mask for logit computation
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)  # (B*G, P+C)
    pixel_values = pixel_values.repeat(num_generations, 1)
    image_grid_thw = image_grid_thw.repeat_interleave(num_generations, dim=0)

    per_token_logps = get_per_token_logps(model, prompt_completion_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids)
    # Get rid of the prompt (-1 because of the shift done in get_per_token_logps)
    per_token_logps = per_token_logps[:, prompt_length - 1 :]

    with torch.inference_mode():
        ref_per_token_logps = get_per_token_logps(ref_model, prompt_completion_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids)
    ref_per_token_logps = ref_per_token_logps[:, prompt_length - 1 :]

    # Compute the KL divergence between the model and the reference model
    per_token_kl = torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1

    # Sum the rewards from all reward functions
    rewards = rewards_per_func.sum(dim=1)

    # Compute grouped-wise rewards
    mean_grouped_rewards = rewards.view(-1, num_generations).mean(dim=1)
    std_grouped_rewards = rewards.view(-1, num_generations).std(dim=1)

    # Normalize the rewards to compute the advantages
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    std_grouped_rewards = std_grouped_rewards.repeat_interleave(num_generations, dim=0)
    advantages = (rewards - mean_grouped_rewards) / (std_grouped_rewards + 1e-4)

    # x - x.detach() allows for preserving gradients from x
    per_token_loss = torch.exp(per_token_logps - per_token_logps.detach()) * advantages.unsqueeze(1)
    per_token_loss = -(per_token_loss - beta * per_token_kl)
    loss = ((per_token_loss * completion_mask).sum(dim=1) / completion_mask.sum(dim=1)).mean()
    return loss, advantages, per_token_kl, completion_mask
