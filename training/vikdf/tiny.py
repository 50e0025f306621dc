"""Tiny, randomly initialised VIKDF models and their tokenizers, for tests and the TypeScript fixtures.

Everything here is made from a seed and a few sentences written for this project (no downloads), so the
same script rebuilds the same model: `vikdf-train make-fixture test/fixtures/tiny-random`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from .configuration import VIKDFConfig
from .modeling import VIKDFModel

# Sentences written for this project (public domain); enough for a small BPE vocabulary.
TOKENIZER_CORPUS = [
    "a dog runs across the green park with a red ball in its mouth",
    "two people sit on a bench near the river and watch the boats",
    "the kitchen table holds a bowl of fruit, a cup of tea and a book",
    "what did you do at the weekend? i went hiking in the mountains.",
    "that sounds lovely! was the weather good? it rained a little, but the view was great.",
    "do you like pizza or pasta more? pizza, especially with mushrooms and cheese.",
    "a child flies a kite on the beach while the sun sets over the sea",
    "my cat sleeps on the windowsill every afternoon in the warm light",
    "have you seen the new film about space travel? not yet, is it worth it?",
    "the old train station has a clock tower and a small cafe inside",
    "we cooked soup together and talked about music, books and travel plans",
    "i am learning to play the guitar; my fingers hurt but it is fun",
    "a snowy street at night with yellow lamps and quiet houses",
    "thank you so much for your help yesterday, it meant a lot to me",
    "there is a blue bicycle leaning against the wall of a bakery",
    "how are you today? i'm fine, thanks. and you? a bit tired, long day at work.",
    "Image: A short image caption: Draw an image based on this description:",
    "[INST] hello there [/INST] hi! how can i help? </s><s> [INST] tell me a story [/INST]",
    "0123456789 ,.;:!?'\"()[]-_/",
]

LLM_SPECIALS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2 as in Llama-2
TEXT_SPECIALS = ["<|startoftext|>", "<|endoftext|>"]  # CLIP's names; <|endoftext|> also pads and masks


def _byte_level_bpe(vocab_size: int, specials: list[str], unk: str | None = None, lowercase: bool = False) -> Tokenizer:
    """A byte-level BPE trained on TOKENIZER_CORPUS (deterministic: the fixture depends on it)."""
    tok = Tokenizer(models.BPE(unk_token=unk) if unk else models.BPE())
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TOKENIZER_CORPUS, trainer=trainer)
    return tok


def build_llm_tokenizer(vocab_size: int = 384) -> Tokenizer:
    """Byte-level BPE that adds <s> in front, like the Llama-2 tokenizer's post-processor."""
    tok = _byte_level_bpe(vocab_size, LLM_SPECIALS, unk="<unk>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def build_text_tokenizer(vocab_size: int = 320) -> Tokenizer:
    """CLIP-style: lower-cased byte-level BPE wrapped in <|startoftext|> ... <|endoftext|>."""
    tok = _byte_level_bpe(vocab_size, TEXT_SPECIALS, lowercase=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)],
    )
    return tok


def tiny_config(llm_type: str = "llama", text_vocab: int = 320, llm_vocab: int = 384, text_encoder_type: str = "clip") -> VIKDFConfig:
    """A few-thousand-parameter VIKDF with every component of the official one."""
    if text_encoder_type == "clip":
        text = dict(vocab_size=text_vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, max_position_embeddings=32, projection_dim=32,
                    bos_token_id=0, eos_token_id=1, pad_token_id=1)
        text_projection_dim = 32
    else:
        text = dict(vocab_size=text_vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, max_position_embeddings=32, pad_token_id=1)
        text_projection_dim = None
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=28, patch_size=14, projection_dim=32)
    qformer = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    if llm_type == "llama":
        llm = dict(vocab_size=llm_vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                   bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.1,
                   tie_word_embeddings=False)
    else:
        llm = dict(vocab_size=llm_vocab, n_embd=64, n_layer=2, n_head=4, n_positions=256,
                   bos_token_id=1, eos_token_id=2, initializer_range=0.1)
    return VIKDFConfig(
        text_encoder_type=text_encoder_type,
        text_encoder=text,
        text_projection_dim=text_projection_dim,
        vision_encoder_type="clip",
        vision_encoder=vision,
        visual_projection_dim=32,
        qformer=qformer,
        llm_type=llm_type,
        llm=llm,
        num_query_tokens=4,
        query_projection_dim=16,
        mask_token_id=1,  # the tiny text tokenizer's <|endoftext|>, as CLIP's 49407
    )


def build_tiny_model(config: VIKDFConfig | None = None, seed: int = 0, pretraining: bool = True) -> VIKDFModel:
    torch.manual_seed(seed)
    model = VIKDFModel(config or tiny_config(), pretraining=pretraining)
    # Random knowledge vectors at N(0, 0.02) barely move a random LLM; a larger scale makes the tests see them.
    with torch.no_grad():
        model.language_projection.weight.normal_(std=0.5)
    return model.eval()


def save_tokenizers(out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    text_path, llm_path = out_dir / "text_tokenizer.json", out_dir / "llm_tokenizer.json"
    build_text_tokenizer().save(str(text_path))
    build_llm_tokenizer().save(str(llm_path))
    return text_path, llm_path
