use super::*;

fn cosine(a: &str, b: &str) -> f32 {
    let (x, y) = (embed(a, DEFAULT_DIM).unwrap(), embed(b, DEFAULT_DIM).unwrap());
    x.iter().zip(&y).map(|(p, q)| p * q).sum()
}

/// Pairs a semantic cache should treat as the same prompt.
pub(super) const NEAR_DUPLICATES: &[(&str, &str)] = &[
    (
        "What is the capital of France? Please answer in one sentence.",
        "what is the capital of france please answer in one sentence",
    ),
    (
        "Summarize the following article in three bullet points: The central bank raised interest rates by 25 basis points on Wednesday, citing persistent inflation.",
        "Summarize the following article in three bullet points:\n\n  The central bank raised interest rates by 25 basis points on Wednesday,   citing persistent inflation!",
    ),
    (
        "Write a Python function that checks whether a string is a palindrome.",
        "Write a Python function that checks whether a string is a palindrom.",
    ),
    (
        "Translate to German: I would like to book a table for two at seven tonight.",
        "Translate to German: I would like to book a table for two tonight at seven.",
    ),
    (
        "Explain the difference between TCP and UDP for a beginner, with examples.",
        "explain the difference between tcp and udp for a beginner with examples please",
    ),
    (
        "You are a helpful assistant. Classify the sentiment of this review as positive or negative: The battery life is great but the screen scratches easily.",
        "You are a helpful assistant. Classify the sentiment of this review as positive or negative: the battery life is great, but the screen scratches easily",
    ),
    (
        "How do I reverse a linked list in Java without using extra memory?",
        "How do I reverse a linked-list in Java without using any extra memory?",
    ),
    (
        "Don't use markdown. List five fruits that are high in vitamin C.",
        "Dont use Markdown; list five fruits that are high in Vitamin-C",
    ),
];

/// Pairs that must not be served from each other's cache entry.
pub(super) const UNRELATED: &[(&str, &str)] = &[
    (
        "What is the capital of France? Please answer in one sentence.",
        "Write a Python function that checks whether a string is a palindrome.",
    ),
    (
        "Summarize the following article in three bullet points: The central bank raised interest rates.",
        "How do I reverse a linked list in Java without using extra memory?",
    ),
    (
        "Explain the difference between TCP and UDP for a beginner, with examples.",
        "List five fruits that are high in vitamin C.",
    ),
    (
        "Translate to German: I would like to book a table for two at seven tonight.",
        "Classify the sentiment of this review as positive or negative: the battery life is great.",
    ),
    (
        "Write a haiku about autumn leaves falling in the park.",
        "What is the time complexity of quicksort in the worst case and why?",
    ),
    (
        "Give me a recipe for vegan chocolate chip cookies.",
        "Give me a summary of the French revolution.",
    ),
];

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[test]
fn near_duplicate_prompts_score_at_least_0_9() {
    for (a, b) in NEAR_DUPLICATES {
        let c = cosine(a, b);
        assert!(c >= 0.9, "{c:.3} for {a:?} / {b:?}");
    }
}

#[test]
fn unrelated_prompts_score_below_0_4() {
    for (a, b) in UNRELATED {
        let c = cosine(a, b);
        assert!(c < 0.4, "{c:.3} for {a:?} / {b:?}");
    }
}

#[test]
fn case_punctuation_and_whitespace_do_not_change_the_vector() {
    let a = embed("Hello, World! How are you?", DEFAULT_DIM).unwrap();
    let b = embed("  hello world...how ARE you  ", DEFAULT_DIM).unwrap();
    assert_eq!(a, b);
    // Unicode lowercase, not just ASCII
    assert_eq!(embed("ÉCOLE Straße", 64).unwrap(), embed("école straße", 64).unwrap());
    // but a different word does change it
    assert_ne!(a, embed("Hello, World! Who are you?", DEFAULT_DIM).unwrap());
}

#[test]
fn synonyms_and_translations_are_not_caught() {
    // documented limitation: lexical overlap only
    assert!(cosine("Buy a new car", "Purchase a brand-new automobile") < 0.5);
    assert!(cosine("What is the weather like today?", "Quel temps fait-il aujourd'hui ?") < 0.3);
}

#[test]
fn vectors_are_unit_length_or_zero_for_text_without_words() {
    for text in ["a", "x y", "The quick brown fox jumps over the lazy dog", "日本語のテキスト", "42"] {
        let v = embed(text, DEFAULT_DIM).unwrap();
        assert!((norm(&v) - 1.0).abs() < 1e-5, "{text:?}");
    }
    for text in ["", "   ", "?!... --- ***"] {
        assert!(embed(text, DEFAULT_DIM).unwrap().iter().all(|&x| x == 0.0), "{text:?}");
    }
}

#[test]
fn output_is_fixed_across_runs_and_platforms() {
    // Golden values: if these change, every stored cache vector is invalidated.
    let v = embed("The quick brown fox", 16).unwrap();
    let rounded: Vec<i32> = v.iter().map(|x| (x * 1000.0).round() as i32).collect();
    assert_eq!(rounded, GOLDEN_QUICK_BROWN_FOX_16);
}

const GOLDEN_QUICK_BROWN_FOX_16: [i32; 16] = [-298, 447, -447, -149, 149, 0, -149, -447, 0, -149, 0, 0, 447, 0, 149, 0];

#[test]
fn dimension_is_configurable_and_validated() {
    let one = embed("hi there", 1).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].abs(), 1.0);
    assert_eq!(embed("hi there", 1024).unwrap().len(), 1024);
    assert_eq!(embed("x", 0), Err(EmbedError::InvalidDim(0)));
    assert_eq!(embed("x", MAX_DIM + 1), Err(EmbedError::InvalidDim(MAX_DIM + 1)));
}

#[test]
fn batch_rows_equal_single_embeddings() {
    let texts = ["first prompt", "", "Second prompt, longer than the first one."];
    let mut out = vec![7.0; texts.len() * 32];
    embed_batch_into(&texts, 32, &mut out).unwrap();
    for (text, row) in texts.iter().zip(out.chunks(32)) {
        assert_eq!(row, embed(text, 32).unwrap().as_slice());
    }
    let mut short = vec![0.0; 10];
    assert_eq!(
        embed_batch_into(&texts, 32, &mut short),
        Err(EmbedError::OutputSize { expected: 96, got: 10 })
    );
}
