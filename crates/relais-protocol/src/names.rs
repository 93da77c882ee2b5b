//! Client and room names: what is accepted, the form the server keeps, and
//! the key that decides when two client names are "the same".
//!
//! # The rule
//!
//! A name (of a client or of a room) is first put in Unicode **NFC**
//! (canonical composition: `e` + U+0301 becomes `é`); that form is what the
//! server registers and shows. It is refused if, in that form, it
//!
//! - is empty, or longer than [`MAX_NAME_LEN`] bytes of UTF-8;
//! - contains a control character (category Cc: U+0000–U+001F,
//!   U+007F–U+009F) or a line or paragraph separator (U+2028, U+2029);
//! - contains a bidirectional control (U+061C, U+200E, U+200F,
//!   U+202A–U+202E, U+2066–U+2069), which can reorder what is shown around
//!   the name;
//! - contains an invisible character: a default-ignorable code point
//!   (Unicode's `Default_Ignorable_Code_Point`: zero-width spaces and joiners,
//!   U+FEFF, soft hyphen, combining grapheme joiner, variation selectors, tag
//!   characters, Hangul fillers, …) or any other format character (category
//!   Cf). Emoji written with a variation selector or a zero-width joiner
//!   (`❤️`, family emoji) are therefore refused; the plain emoji are fine;
//! - contains an unassigned code point (category Cn, noncharacters included)
//!   or a private-use one (Co);
//! - has no visible character: only whitespace, combining marks (category
//!   M) and U+2800 BRAILLE PATTERN BLANK;
//! - starts or ends with whitespace (`White_Space`) or U+2800. The name is
//!   refused rather than trimmed, so what a client asks for is what it gets.
//!
//! Whitespace inside a name, accents, and every script and symbol outside
//! those classes are fine.
//!
//! # Uniqueness
//!
//! Client names are unique per room by [`name_key`]: the Unicode TR39
//! confusable skeleton of the lowercased name, so `Alice`, `alice` and
//! `аlice` (with a Cyrillic `а`) are the same player, while each is shown as
//! the NFC form its client chose. Rooms are addresses and are compared by
//! their NFC form exactly ([`normalize_room`]).
//!
//! The character data (NFC, general categories, confusables) is that of
//! Unicode 18.0, from the `unicode-normalization`, `unicode-properties` and
//! `unicode-security` crates; the default-ignorable ranges are below.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

use crate::MAX_NAME_LEN;

/// Why a name (of a client or a room) is not acceptable. Every variant that
/// names a character carries the first offending one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name, in NFC, is longer than [`MAX_NAME_LEN`] bytes.
    #[error("name is {0} bytes long, the maximum is {MAX_NAME_LEN}")]
    TooLong(usize),
    /// The name contains a control character (such as a newline, ESC or
    /// NUL) or a line or paragraph separator.
    #[error("name contains a control character (U+{:04X})", u32::from(*.0))]
    ControlCharacter(char),
    /// The name contains a bidirectional control, which can reorder the text
    /// around it.
    #[error("name contains a bidirectional control (U+{:04X})", u32::from(*.0))]
    BidiControl(char),
    /// The name contains an invisible character: a default-ignorable code
    /// point (zero-width space, variation selector, …) or another format
    /// character.
    #[error("name contains an invisible character (U+{:04X})", u32::from(*.0))]
    Invisible(char),
    /// The name contains a code point Unicode has not assigned (or a
    /// noncharacter).
    #[error("name contains an unassigned code point (U+{:04X})", u32::from(*.0))]
    Unassigned(char),
    /// The name contains a private-use code point.
    #[error("name contains a private-use code point (U+{:04X})", u32::from(*.0))]
    PrivateUse(char),
    /// The name has no visible character (only whitespace, combining marks
    /// or blanks).
    #[error("name has no visible character")]
    NoVisibleCharacter,
    /// The name starts or ends with whitespace.
    #[error("name starts or ends with whitespace")]
    SurroundingWhitespace,
    /// The name is not valid UTF-8.
    #[error("name is not valid UTF-8")]
    InvalidUtf8,
}

/// Unicode's `Default_Ignorable_Code_Point` property, as sorted, disjoint,
/// inclusive ranges: the derivation in `DerivedCoreProperties.txt` (Unicode
/// 18.0; unchanged since 6.x apart from assignments inside these ranges).
/// No maintained crate usable at this crate's minimum Rust version exposes
/// it (`unicode-security` keeps its copy private, ICU4X needs Rust 1.88); a
/// unit test checks this table against `unicode-security`'s, which its TR39
/// skeleton removes.
const DEFAULT_IGNORABLE: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),   // SOFT HYPHEN
    ('\u{034F}', '\u{034F}'),   // COMBINING GRAPHEME JOINER
    ('\u{061C}', '\u{061C}'),   // ARABIC LETTER MARK
    ('\u{115F}', '\u{1160}'),   // HANGUL CHOSEONG FILLER, JUNGSEONG FILLER
    ('\u{17B4}', '\u{17B5}'),   // KHMER VOWEL INHERENT AQ, AA
    ('\u{180B}', '\u{180F}'),   // MONGOLIAN FREE VARIATION SELECTORS, VOWEL SEPARATOR
    ('\u{200B}', '\u{200F}'),   // ZERO WIDTH SPACE .. RIGHT-TO-LEFT MARK
    ('\u{202A}', '\u{202E}'),   // bidi embeddings and overrides
    ('\u{2060}', '\u{206F}'),   // WORD JOINER .. NOMINAL DIGIT SHAPES, bidi isolates
    ('\u{3164}', '\u{3164}'),   // HANGUL FILLER
    ('\u{FE00}', '\u{FE0F}'),   // VARIATION SELECTORS 1-16
    ('\u{FEFF}', '\u{FEFF}'),   // ZERO WIDTH NO-BREAK SPACE (byte order mark)
    ('\u{FFA0}', '\u{FFA0}'),   // HALFWIDTH HANGUL FILLER
    ('\u{FFF0}', '\u{FFF8}'),   // reserved
    ('\u{1BCA0}', '\u{1BCA3}'), // SHORTHAND FORMAT CONTROLS
    ('\u{1D173}', '\u{1D17A}'), // MUSICAL SYMBOL BEGIN BEAM .. END PHRASE
    ('\u{E0000}', '\u{E0FFF}'), // TAGS, VARIATION SELECTORS 17-256, reserved
];

/// The `Bidi_Control` property (`PropList.txt`): every one is also
/// default-ignorable, but gets its own, clearer error.
const BIDI_CONTROLS: &[(char, char)] = &[
    ('\u{061C}', '\u{061C}'), // ARABIC LETTER MARK
    ('\u{200E}', '\u{200F}'), // LEFT-TO-RIGHT MARK, RIGHT-TO-LEFT MARK
    ('\u{202A}', '\u{202E}'), // embeddings and overrides
    ('\u{2066}', '\u{2069}'), // isolates
];

/// Most rounds of [`name_key`]'s skeleton-of-lowercase step; every single
/// code point settles in fewer (a unit test checks all of them).
const KEY_ROUNDS: usize = 4;

fn in_ranges(c: char, ranges: &[(char, char)]) -> bool {
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Whether `c` has Unicode's `Default_Ignorable_Code_Point` property.
fn is_default_ignorable(c: char) -> bool {
    in_ranges(c, DEFAULT_IGNORABLE)
}

/// Whitespace for the "starts or ends with" and "no visible character"
/// rules: Unicode's `White_Space`, plus U+2800 BRAILLE PATTERN BLANK, a
/// symbol that draws nothing.
fn is_blank(c: char) -> bool {
    c.is_whitespace() || c == '\u{2800}'
}

/// A control character (Cc) or a line or paragraph separator: what ends,
/// rewinds or rewrites a line.
fn is_control_or_line_break(c: char) -> bool {
    c.is_control()
        || matches!(
            c.general_category(),
            GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
        )
}

/// A default-ignorable code point or another format character (Cf): what
/// draws nothing but changes the text around it.
fn is_invisible(c: char) -> bool {
    is_default_ignorable(c) || c.general_category() == GeneralCategory::Format
}

/// Whether printing `c` as it is can change how the text around it shows:
/// a control character (Cc: ESC starts terminal escape sequences, CR goes
/// back to the start of the line), a line or paragraph separator, a
/// bidirectional control (reorders the line), or an invisible character
/// (default-ignorable or format: zero-width spaces and joiners, variation
/// selectors, tags, …).
///
/// No accepted name contains one. A program that prints text from the
/// network (payloads, server texts) should escape these; `relais` (the
/// command line) does.
pub fn is_unsafe_to_display(c: char) -> bool {
    is_control_or_line_break(c) || is_invisible(c)
}

/// Why the single character `c` may not be in a name, if it may not.
fn refused_char(c: char) -> Option<NameError> {
    let category = c.general_category();
    if is_control_or_line_break(c) {
        Some(NameError::ControlCharacter(c))
    } else if in_ranges(c, BIDI_CONTROLS) {
        Some(NameError::BidiControl(c))
    } else if is_invisible(c) {
        Some(NameError::Invisible(c))
    } else if category == GeneralCategory::Unassigned {
        Some(NameError::Unassigned(c))
    } else if category == GeneralCategory::PrivateUse {
        Some(NameError::PrivateUse(c))
    } else {
        None
    }
}

/// Whether `c` (an accepted character) shows something by itself: not
/// whitespace, not a blank, not a combining mark.
fn is_visible(c: char) -> bool {
    !is_blank(c) && c.general_category_group() != GeneralCategoryGroup::Mark
}

/// Checks a name against the rule (see the module docs) and returns its NFC
/// form, the form the server registers and shows, or why it is refused.
///
/// ```
/// use relais_protocol::{normalize_name, NameError};
/// assert_eq!(normalize_name("e\u{301}lodie").as_deref(), Ok("élodie"));
/// assert_eq!(normalize_name("alice\u{200b}"), Err(NameError::Invisible('\u{200b}')));
/// assert_eq!(normalize_name(" alice"), Err(NameError::SurroundingWhitespace));
/// ```
pub fn normalize_name(raw: &str) -> Result<String, NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    let name: String = raw.nfc().collect();
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if let Some(e) = name.chars().find_map(refused_char) {
        return Err(e);
    }
    if !name.chars().any(is_visible) {
        return Err(NameError::NoVisibleCharacter);
    }
    let starts_or_ends_blank =
        name.chars().next().is_some_and(is_blank) || name.chars().next_back().is_some_and(is_blank);
    if starts_or_ends_blank {
        return Err(NameError::SurroundingWhitespace);
    }
    Ok(name)
}

/// Checks a room name and returns its NFC form. Rooms follow the same rule
/// as client names ([`normalize_name`]); they are compared by this form
/// exactly (no [`name_key`]): a room is an address, and join tokens allow
/// rooms by prefix.
pub fn normalize_room(raw: &str) -> Result<String, NameError> {
    normalize_name(raw)
}

/// The key under which a client name is unique in its room: two names with
/// the same key are the same player. It is the Unicode TR39 confusable
/// skeleton of the lowercased name (`unicode_security::skeleton`), taken
/// again on its own lowercase until it no longer changes (at most
/// [`KEY_ROUNDS`] rounds), so that the key is its own key: the skeleton maps
/// some characters to capitals (digit `0` to `O`), which lowercasing folds
/// in turn. `Alice`, `ALICE`, `аlice` (Cyrillic `а`), `a1ice` and `al1ce`
/// share a key; capital `I` and lowercase `l` do not, since lowercasing comes
/// first.
///
/// The key is for comparing only, never for showing. It is meant for names
/// [`normalize_name`] accepted (it is the same for any canonically
/// equivalent spelling).
pub fn name_key(name: &str) -> String {
    fn step(s: &str) -> String {
        unicode_security::skeleton(&s.to_lowercase()).collect()
    }
    let mut key = step(name);
    for _ in 1..KEY_ROUNDS {
        let next = step(&key);
        if next == key {
            break;
        }
        key = next;
    }
    key
}

/// Checks a client name against the rule of [`normalize_name`], without
/// keeping the normalised form.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    normalize_name(name).map(drop)
}

/// Checks a room name against the rule of [`normalize_room`], without
/// keeping the normalised form.
pub fn validate_room(room: &str) -> Result<(), NameError> {
    normalize_room(room).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_names_within_the_rules() {
        for name in [
            "alice",
            "élodie 🎮",
            "Ünal Yılmaz",
            "山田太郎",
            "علي",
            "x",
            "a b",
            "🎮",
            "a\u{301}",
            "\u{1f1eb}\u{1f1f7}", // a regional-indicator flag
        ] {
            assert!(normalize_name(name).is_ok(), "{name:?}");
        }
        assert_eq!(validate_name("alice"), Ok(()));
        assert_eq!(validate_room("lobby"), Ok(()));
    }

    #[test]
    fn the_length_limit_is_inclusive_and_counts_nfc_bytes() {
        let max = "x".repeat(MAX_NAME_LEN);
        assert_eq!(normalize_name(&max).as_deref(), Ok(max.as_str()));
        assert_eq!(
            normalize_name(&"x".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::TooLong(MAX_NAME_LEN + 1))
        );
        // 32 decomposed é (96 bytes) compose to 64 bytes: accepted.
        let decomposed = "e\u{301}".repeat(MAX_NAME_LEN / 2);
        assert_eq!(decomposed.len(), 96);
        assert_eq!(
            normalize_name(&decomposed),
            Ok("é".repeat(MAX_NAME_LEN / 2))
        );
        // One more byte after composition is one too many.
        let over = format!("{decomposed}x");
        assert_eq!(normalize_name(&over), Err(NameError::TooLong(65)));
        // U+0958 has no composed form: NFC spells it with two code points,
        // 6 bytes for 3, and the limit applies to those.
        let qa = "\u{958}".repeat(11);
        assert_eq!(qa.len(), 33);
        assert_eq!(normalize_name(&qa), Err(NameError::TooLong(66)));
        assert_eq!(normalize_name(&"\u{958}".repeat(10)).unwrap().len(), 60);
        assert_eq!(normalize_name(""), Err(NameError::Empty));
        assert_eq!(validate_room(""), Err(NameError::Empty));
    }

    #[test]
    fn control_characters_and_line_breaks_are_refused() {
        for c in [
            '\0', '\n', '\r', '\u{1b}', '\u{7f}', '\u{80}', '\u{9f}', '\u{85}',
        ] {
            let name = format!("a{c}b");
            assert_eq!(normalize_name(&name), Err(NameError::ControlCharacter(c)));
        }
        for c in ['\u{2028}', '\u{2029}'] {
            let name = format!("a{c}b");
            assert_eq!(normalize_name(&name), Err(NameError::ControlCharacter(c)));
        }
        // The edges of C0 and C1 are printable.
        assert!(normalize_name("a\u{a0}b").is_ok());
        assert!(normalize_name("a b~").is_ok());
        assert_eq!(
            NameError::ControlCharacter('\u{1b}').to_string(),
            "name contains a control character (U+001B)"
        );
    }

    #[test]
    fn bidi_controls_are_refused() {
        for c in [
            '\u{61c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}',
        ] {
            let name = format!("ab{c}c");
            assert_eq!(normalize_name(&name), Err(NameError::BidiControl(c)));
        }
        // Neighbours that are not bidi controls are still invisible.
        assert_eq!(
            normalize_name("a\u{200d}b"),
            Err(NameError::Invisible('\u{200d}'))
        );
        assert_eq!(
            normalize_name("a\u{206a}b"),
            Err(NameError::Invisible('\u{206a}'))
        );
    }

    #[test]
    fn invisible_characters_are_refused() {
        for c in [
            '\u{ad}',    // soft hyphen
            '\u{34f}',   // combining grapheme joiner
            '\u{115f}',  // Hangul choseong filler
            '\u{1160}',  // Hangul jungseong filler
            '\u{180b}',  // Mongolian free variation selector
            '\u{180e}',  // Mongolian vowel separator
            '\u{200b}',  // zero width space
            '\u{200c}',  // zero width non-joiner
            '\u{200d}',  // zero width joiner
            '\u{2060}',  // word joiner
            '\u{2064}',  // invisible plus
            '\u{3164}',  // Hangul filler
            '\u{fe00}',  // variation selector 1
            '\u{fe0f}',  // variation selector 16
            '\u{feff}',  // zero width no-break space
            '\u{ffa0}',  // halfwidth Hangul filler
            '\u{1bca0}', // shorthand format letter overlap
            '\u{1d173}', // musical symbol begin beam
            '\u{e0001}', // language tag
            '\u{e0041}', // tag latin capital letter a
            '\u{e0100}', // variation selector 17
            '\u{e01ef}', // variation selector 256
            '\u{fff9}',  // interlinear annotation anchor (format, not ignorable)
            '\u{600}',   // Arabic number sign (format, not ignorable)
        ] {
            let name = format!("ab{c}c");
            assert_eq!(normalize_name(&name), Err(NameError::Invisible(c)), "{c:?}");
        }
        // The emoji alone is fine, with its presentation selector it is not.
        assert!(normalize_name("\u{2764}").is_ok());
        assert_eq!(
            normalize_name("\u{2764}\u{fe0f}"),
            Err(NameError::Invisible('\u{fe0f}'))
        );
    }

    #[test]
    fn the_default_ignorable_table_matches_unicode_security() {
        // unicode-security's TR39 skeleton drops exactly the default-ignorable
        // code points (from its own table, generated from the UCD): a
        // character's skeleton is empty iff it is in ours.
        let mut buf = [0; 4];
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let dropped = unicode_security::skeleton(c.encode_utf8(&mut buf))
                .next()
                .is_none();
            assert_eq!(is_default_ignorable(c), dropped, "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn unassigned_and_private_use_code_points_are_refused() {
        for c in ['\u{378}', '\u{fdd0}', '\u{fffe}', '\u{10ffff}', '\u{e0080}'] {
            let name = format!("a{c}");
            let got = normalize_name(&name);
            // U+E0080 is unassigned but default-ignorable: invisible first.
            if c == '\u{e0080}' {
                assert_eq!(got, Err(NameError::Invisible(c)));
            } else {
                assert_eq!(got, Err(NameError::Unassigned(c)), "{c:?}");
            }
        }
        for c in ['\u{e000}', '\u{f8ff}', '\u{f0000}', '\u{10fffd}'] {
            let name = format!("a{c}");
            assert_eq!(normalize_name(&name), Err(NameError::PrivateUse(c)));
        }
    }

    #[test]
    fn a_name_needs_a_visible_character() {
        for name in [
            " ",
            "   ",
            "\u{3000}",
            "\u{301}",
            "\u{301}\u{302}",
            "\u{2800}",
        ] {
            assert_eq!(
                normalize_name(name),
                Err(NameError::NoVisibleCharacter),
                "{name:?}"
            );
        }
        // A mark on a visible base is fine.
        assert!(normalize_name("\u{915}\u{94d}").is_ok());
    }

    #[test]
    fn surrounding_whitespace_is_refused_not_trimmed() {
        for name in [
            " alice",
            "alice ",
            "\u{a0}alice",
            "alice\u{3000}",
            "\u{2800}alice",
        ] {
            assert_eq!(
                normalize_name(name),
                Err(NameError::SurroundingWhitespace),
                "{name:?}"
            );
        }
        assert_eq!(normalize_name("alice bob").as_deref(), Ok("alice bob"));
        assert_eq!(
            normalize_room(" lobby"),
            Err(NameError::SurroundingWhitespace)
        );
    }

    #[test]
    fn look_alikes_are_one_name_or_refused() {
        let alice = normalize_name("alice").unwrap();
        // Invisible: refused.
        assert_eq!(
            normalize_name("alice\u{200b}"),
            Err(NameError::Invisible('\u{200b}'))
        );
        // Cyrillic а: accepted and shown as typed, but the same key.
        let cyrillic = normalize_name("\u{430}lice").unwrap();
        assert_ne!(cyrillic, alice);
        assert_eq!(name_key(&cyrillic), name_key(&alice));
        // Decomposed é: the same NFC form, so the same name.
        assert_eq!(
            normalize_name("e\u{301}lodie"),
            normalize_name("\u{e9}lodie")
        );
        assert_eq!(normalize_name("e\u{301}lodie").unwrap(), "\u{e9}lodie");
        // Case.
        assert_eq!(name_key("Alice"), name_key("alice"));
        assert_eq!(name_key("ALICE"), name_key("alice"));
        // Digits that look like letters, after lowercasing.
        assert_eq!(name_key("b0b"), name_key("bob"));
        assert_eq!(name_key("a1ice"), name_key("alice"));
        // Different names stay different.
        assert_ne!(name_key("alice"), name_key("alicia"));
        assert_ne!(name_key("bob"), name_key("rob"));
        // Rooms are compared by their NFC form: case matters there.
        assert_ne!(normalize_room("Lobby"), normalize_room("lobby"));
        assert_eq!(
            normalize_room("cafe\u{301}").unwrap(),
            normalize_room("caf\u{e9}").unwrap()
        );
    }

    #[test]
    fn the_key_of_every_code_point_is_its_own_key() {
        let mut buf = [0; 4];
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let key = name_key(c.encode_utf8(&mut buf));
            assert_eq!(name_key(&key), key, "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn what_is_unsafe_to_display_is_what_names_refuse_for_hiding_or_moving_text() {
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let refused = matches!(
                refused_char(c),
                Some(
                    NameError::ControlCharacter(_)
                        | NameError::BidiControl(_)
                        | NameError::Invisible(_)
                )
            );
            assert_eq!(is_unsafe_to_display(c), refused, "U+{:04X}", u32::from(c));
        }
        for c in [
            '\u{1b}', '\r', '\n', '\u{7f}', '\u{9b}', '\u{202e}', '\u{2028}', '\u{200b}',
        ] {
            assert!(is_unsafe_to_display(c), "{c:?}");
        }
        for c in ['a', ' ', '\u{a0}', 'é', '\u{301}', '🎮', '\u{e000}'] {
            assert!(!is_unsafe_to_display(c), "{c:?}");
        }
    }

    #[test]
    fn messages_say_what_is_wrong() {
        assert_eq!(
            NameError::TooLong(70).to_string(),
            "name is 70 bytes long, the maximum is 64"
        );
        assert_eq!(
            NameError::Invisible('\u{200b}').to_string(),
            "name contains an invisible character (U+200B)"
        );
        assert_eq!(
            NameError::PrivateUse('\u{f0000}').to_string(),
            "name contains a private-use code point (U+F0000)"
        );
    }

    proptest! {
        #[test]
        fn normalizing_is_idempotent(raw in "\\PC{0,40}|[a-z\u{300}-\u{36f}\u{e9}\u{1100}-\u{1112}\u{1161}-\u{1175} ]{0,40}") {
            if let Ok(name) = normalize_name(&raw) {
                prop_assert_eq!(normalize_name(&name), Ok(name.clone()));
                prop_assert!(name.len() <= MAX_NAME_LEN);
                prop_assert!(name.chars().any(is_visible));
                let key = name_key(&name);
                prop_assert_eq!(name_key(&key), key.clone());
                // Canonically equivalent spellings share a key.
                let nfd: String = name.nfd().collect();
                prop_assert_eq!(name_key(&nfd), key);
            }
        }

        #[test]
        fn the_key_ignores_case(name in "[a-zA-Z0-9 ]{1,20}") {
            prop_assert_eq!(name_key(&name), name_key(&name.to_uppercase()));
            prop_assert_eq!(name_key(&name), name_key(&name.to_lowercase()));
        }

        #[test]
        fn any_invisible_character_is_refused_anywhere(
            prefix in "[a-z]{0,5}",
            suffix in "[a-z]{0,5}",
            index in 0..DEFAULT_IGNORABLE.len(),
            offset in any::<u32>(),
        ) {
            let (lo, hi) = DEFAULT_IGNORABLE[index];
            let span = u32::from(hi) - u32::from(lo) + 1;
            let c = char::from_u32(u32::from(lo) + offset % span).unwrap();
            let name = format!("{prefix}x{c}{suffix}");
            prop_assert!(matches!(
                normalize_name(&name),
                Err(NameError::Invisible(_) | NameError::BidiControl(_))
            ));
        }
    }
}
