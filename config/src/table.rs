//! The key table: every setting a service or client reads is declared once, as a [`Key`] in a
//! static table (`META_KEYS`, `TLS_KEYS`, `LOCAL_KEYS`, `CLIENT_KEYS`),
//! with its TOML name and aliases, its `ock.mmc.*` name, its command-line flag, its [`Kind`]
//! (how it parses and what makes it valid), its default, its range and its doc line.
//!
//! Everything else is derived from the tables: the structs' `Default`, TOML parsing (unknown keys
//! are errors that name the closest known key), `ock.mmc.*` parsing (unknown keys are warnings
//! that name the closest known key), the binaries' flags, validation and the README's key list.
//!
//! Declare a key with [`config_key!`](crate::config_key) and a struct with
//! [`config_struct!`](crate::config_struct).

use std::marker::PhantomData;

use super::{
    check_capacity, check_tcp_url, parse_bool, parse_int, parse_metrics_url, parse_size,
    url_string, ConfigError, LogLevel, OckFile, TLS_PATH_CAPACITY, URL_CAPACITY,
};

/// A value as it arrives: text (a key = value file, a flag, a default) or a TOML value.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    Text(&'a str),
    Toml(&'a toml::Value),
}

/// How a key's value parses, what makes it valid, and what the README calls it. Implemented by
/// marker types ([`TcpUrl`], [`Size`], [`Int`], ...), so two keys with the same Rust type can
/// parse differently.
pub trait Kind {
    /// The parsed value.
    type Value;
    /// What the README's "Type" column says.
    const NAME: &'static str;
    /// Parses text (surrounding whitespace already trimmed in key = value files).
    fn from_text(s: &str) -> Result<Self::Value, ConfigError>;
    /// Parses a TOML value; by default a TOML string, parsed as text.
    fn from_toml(v: &toml::Value) -> Result<Self::Value, ConfigError> {
        match v {
            toml::Value::String(s) => Self::from_text(s),
            other => Err(wrong_type(other, Self::NAME)),
        }
    }
    /// Checks a value about to be used (`validate`); `key` names it in the error.
    fn check(_key: &str, _v: &Self::Value) -> Result<(), ConfigError> {
        Ok(())
    }
    /// The value as a number, for range checks (`None` for kinds that are not numbers).
    fn number(_v: &Self::Value) -> Option<i128> {
        None
    }
    /// Parses either form.
    fn parse(input: Input<'_>) -> Result<Self::Value, ConfigError> {
        match input {
            Input::Text(s) => Self::from_text(s),
            Input::Toml(v) => Self::from_toml(v),
        }
    }
}

fn wrong_type(v: &toml::Value, expected: &str) -> ConfigError {
    ConfigError::Value {
        value: v.to_string(),
        reason: format!("expected {expected}, found a TOML {}", v.type_str()),
    }
}

/// A command-line flag that sets a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// `--name VALUE`: the value parses as the key's text.
    Value(&'static str),
    /// `--name` alone sets the key to the given text (`--no-prefault` sets `prefault` = false).
    Switch(&'static str, &'static str),
}

impl Flag {
    /// The flag's long name, without `--`.
    pub fn long(self) -> &'static str {
        match self {
            Flag::Value(l) | Flag::Switch(l, _) => l,
        }
    }
}

/// One setting of config struct `C`: declared once, with [`config_key!`](crate::config_key).
pub struct Key<C: 'static> {
    /// The TOML name (in its table); validation errors name the key by it.
    pub name: &'static str,
    /// Other TOML names accepted for it (Ascend MemCache's).
    pub aliases: &'static [&'static str],
    /// The `ock.mmc.*` name, when a key = value file can set it.
    pub ock: Option<&'static str>,
    /// The command-line flag of the service binary, if any.
    pub flag: Option<Flag>,
    /// [`Kind::NAME`] of its kind.
    pub kind: &'static str,
    /// The default, as text that parses as the key's value (empty = none: an empty string, or
    /// unset for optional kinds).
    pub default: &'static str,
    /// Inclusive bounds, checked by `validate`.
    pub min: Option<i128>,
    pub max: Option<i128>,
    /// One line for the README and `--help`.
    pub doc: &'static str,
    /// The struct field it sets; two keys of one table that set the same field conflict.
    pub field: &'static str,
    /// Parses a value and sets the field. Errors are [`ConfigError::Value`]; the caller names
    /// the key (as the file or the flag spelled it).
    pub apply: fn(&mut C, Input<'_>) -> Result<(), ConfigError>,
    /// Checks the field (kind and this key's range); `key` is the name to report.
    pub check: fn(&Key<C>, &C, &str) -> Result<(), ConfigError>,
}

impl<C> Key<C> {
    /// Whether TOML name `name` is this key (its name or an alias).
    pub fn is_toml_name(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }

    /// Fails when `n` is outside `min..=max`.
    pub fn check_range(&self, key: &str, n: Option<i128>) -> Result<(), ConfigError> {
        let Some(n) = n else { return Ok(()) };
        let below = self.min.is_some_and(|m| n < m);
        let above = self.max.is_some_and(|m| n > m);
        if below || above {
            return Err(ConfigError::Invalid {
                key: key.to_string(),
                reason: format!("{n} is outside {}", self.range_text()),
            });
        }
        Ok(())
    }

    /// `1..=100`, `>= 1`, `<= 9`, or empty.
    pub fn range_text(&self) -> String {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => format!("{lo}..={hi}"),
            (Some(lo), None) => format!(">= {lo}"),
            (None, Some(hi)) => format!("<= {hi}"),
            (None, None) => String::new(),
        }
    }
}

/// Declares one [`Key`] of a config struct. Fields, in this order (`[...]` = optional):
///
/// ```text
/// Struct {
///     name: "toml_name", [aliases: ["other"],] [ock: "ock.mmc.x",] [flag: Flag::Value("x"),]
///     kind: KindType, field: struct_field, [set: |c: &mut Struct, v| -> Result<(), _>,]
///     default: "text", [min: 1,] [max: 100,] doc: "One line.",
/// }
/// ```
///
/// With `field` alone the value is stored in the field and `validate` checks it by kind and range.
/// With `set` too, `set` stores it (the field's type must still be the kind's value). With `sets:
/// "field"` instead of `field` (a field of another type), only `set` is used and nothing is
/// checked.
#[macro_export]
macro_rules! config_key {
    ($C:ty {
        name: $name:literal,
        $(aliases: [$($alias:literal),* $(,)?],)?
        $(ock: $ock:expr,)?
        $(flag: $flag:expr,)?
        kind: $K:ty,
        field: $field:ident,
        $(set: $set:expr,)?
        default: $default:literal,
        $(min: $min:literal,)?
        $(max: $max:literal,)?
        doc: $doc:literal $(,)?
    }) => {
        $crate::table::Key::<$C> {
            name: $name,
            aliases: &[$($($alias),*)?],
            ock: $crate::config_key!(@opt $($ock)?),
            flag: $crate::config_key!(@opt $($flag)?),
            kind: <$K as $crate::table::Kind>::NAME,
            default: $default,
            min: $crate::config_key!(@opt $($min)?),
            max: $crate::config_key!(@opt $($max)?),
            doc: $doc,
            field: stringify!($field),
            apply: |c: &mut $C, input| {
                let v = <$K as $crate::table::Kind>::parse(input)?;
                $crate::config_key!(@set c, v, $field $(, $set)?)
            },
            check: |k, c: &$C, key| {
                <$K as $crate::table::Kind>::check(key, &c.$field)?;
                k.check_range(key, <$K as $crate::table::Kind>::number(&c.$field))
            },
        }
    };
    ($C:ty {
        name: $name:literal,
        $(aliases: [$($alias:literal),* $(,)?],)?
        $(ock: $ock:expr,)?
        $(flag: $flag:expr,)?
        kind: $K:ty,
        sets: $field:literal,
        set: $set:expr,
        default: $default:literal,
        doc: $doc:literal $(,)?
    }) => {
        $crate::table::Key::<$C> {
            name: $name,
            aliases: &[$($($alias),*)?],
            ock: $crate::config_key!(@opt $($ock)?),
            flag: $crate::config_key!(@opt $($flag)?),
            kind: <$K as $crate::table::Kind>::NAME,
            default: $default,
            min: None,
            max: None,
            doc: $doc,
            field: $field,
            apply: |c: &mut $C, input| {
                let v = <$K as $crate::table::Kind>::parse(input)?;
                ($set)(c, v)
            },
            check: |_, _, _| Ok(()),
        }
    };
    (@opt) => { None };
    (@opt $v:expr) => { Some($v) };
    (@set $c:ident, $v:ident, $field:ident) => {{
        $c.$field = $v;
        Ok(())
    }};
    (@set $c:ident, $v:ident, $field:ident, $set:expr) => { ($set)($c, $v) };
}

/// Declares a config struct whose `Default` comes from its key table: each field starts at its
/// type's default, then every key's default is applied in table order.
#[macro_export]
macro_rules! config_struct {
    (
        keys: $keys:expr;
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Default for $name {
            /// The defaults of the key table.
            fn default() -> Self {
                let mut c = $name { $( $field: Default::default(), )* };
                $crate::table::apply_defaults($keys, &mut c);
                c
            }
        }
    };
}

/// Sets every key's default, in table order. The defaults are part of the table, so a default
/// that does not parse is a bug (and a test parses them all).
pub fn apply_defaults<C: 'static>(keys: &[Key<C>], c: &mut C) {
    for k in keys {
        if let Err(e) = (k.apply)(c, Input::Text(k.default)) {
            panic!("default of config key `{}` does not parse: {e}", k.name);
        }
    }
}

/// Checks every key's field by kind and range; `prefix` goes before the names in errors
/// (`"tls."`).
pub fn validate<C: 'static>(keys: &[Key<C>], c: &C, prefix: &str) -> Result<(), ConfigError> {
    for k in keys {
        (k.check)(k, c, &format!("{prefix}{}", k.name))?;
    }
    Ok(())
}

/// Sets the keys whose `ock.mmc.*` name `ock` has; an error names the `ock.mmc.*` key.
pub fn apply_ock<C: 'static>(keys: &[Key<C>], ock: &OckFile, c: &mut C) -> Result<(), ConfigError> {
    for k in keys {
        let Some(name) = k.ock else { continue };
        if let Some(v) = ock.get(name) {
            (k.apply)(c, Input::Text(v)).map_err(|e| e.for_key(name))?;
        }
    }
    Ok(())
}

/// The `ock.mmc.*` names of a table.
pub fn ock_names<C: 'static>(keys: &[Key<C>]) -> impl Iterator<Item = &'static str> + '_ {
    keys.iter().filter_map(|k| k.ock)
}

/// The TOML names (and aliases) of a table.
pub fn toml_names<C: 'static>(keys: &[Key<C>]) -> impl Iterator<Item = &'static str> + '_ {
    keys.iter()
        .flat_map(|k| std::iter::once(k.name).chain(k.aliases.iter().copied()))
}

/// A name longer than this is compared by its first this many bytes: no key is nearly that long,
/// and each comparison costs the name's length times the key's.
pub const CLOSEST_NAME_MAX: usize = 128;

/// The known name closest to `name`: the smallest Levenshtein distance less the length of the
/// common prefix (a mistyped key usually starts right: `read_threads` is closer to
/// `read_thread_pool_size` than to `create_id`), the first on a tie. Only the first
/// [`CLOSEST_NAME_MAX`] bytes of `name` count, so a huge unknown key costs no more than a long one.
pub fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut end = name.len().min(CLOSEST_NAME_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let name = &name[..end];
    let score = |k: &str| {
        let prefix = name
            .bytes()
            .zip(k.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        strsim::levenshtein(name, k) as i64 - prefix as i64
    };
    known.into_iter().min_by_key(|k| score(k))
}

/// The error for a TOML key no table knows: names it, the table it is in, and the closest known
/// key.
pub fn unknown_toml_key<'a>(
    name: &str,
    table: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> ConfigError {
    let place = if table.is_empty() {
        String::new()
    } else {
        format!(" in [{table}]")
    };
    let hint = closest(name, known)
        .map(|k| format!(" (the closest known key is `{k}`)"))
        .unwrap_or_default();
    ConfigError::Toml(format!("unknown key `{name}`{place}{hint}"))
}

/// The dotted name of `name` in TOML table `table` (`"local.dram_size"`), for errors.
pub fn toml_path(table: &str, name: &str) -> String {
    if table.is_empty() {
        name.to_string()
    } else {
        format!("{table}.{name}")
    }
}

/// Applies the entries of one TOML table to a struct, refusing two entries that set one field
/// (a name and its alias, or `timeout_ms` and `timeout_seconds`).
pub struct TomlApplier<C: 'static> {
    keys: &'static [Key<C>],
    table: String,
    /// (field, the TOML name that set it).
    seen: Vec<(&'static str, String)>,
}

impl<C: 'static> TomlApplier<C> {
    /// For the entries of TOML table `table` (`""` = the top level).
    pub fn new(keys: &'static [Key<C>], table: &str) -> Self {
        TomlApplier {
            keys,
            table: table.to_string(),
            seen: Vec::new(),
        }
    }

    /// Applies `name = value` if the table knows `name`; `Ok(false)` if it does not.
    pub fn apply(
        &mut self,
        name: &str,
        value: &toml::Value,
        c: &mut C,
    ) -> Result<bool, ConfigError> {
        let Some(k) = self.keys.iter().find(|k| k.is_toml_name(name)) else {
            return Ok(false);
        };
        if let Some((_, other)) = self.seen.iter().find(|(f, _)| *f == k.field) {
            return Err(ConfigError::Invalid {
                key: toml_path(&self.table, other),
                reason: format!("set either `{other}` or `{name}`, not both"),
            });
        }
        self.seen.push((k.field, name.to_string()));
        (k.apply)(c, Input::Toml(value)).map_err(|e| e.for_key(&toml_path(&self.table, name)))?;
        Ok(true)
    }
}

/// Parses TOML text into a table (syntax errors are [`ConfigError::Toml`]).
pub fn parse_toml(text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Toml(e.to_string().trim_end().to_string()))
}

/// A TOML value that must be a table (`[tls]`, `[local]`).
pub fn as_table<'v>(name: &str, v: &'v toml::Value) -> Result<&'v toml::Table, ConfigError> {
    v.as_table().ok_or_else(|| {
        ConfigError::Toml(format!(
            "`{name}` must be a table ([{name}]), found a {}",
            v.type_str()
        ))
    })
}

/// The README's rows for a table: TOML key (and aliases), `ock.mmc.*` key, flag, type, default,
/// meaning. `prefix` goes before TOML names (`"tls."`).
pub fn markdown_rows<C: 'static>(keys: &[Key<C>], prefix: &str) -> String {
    let mut out = String::new();
    for k in keys {
        let mut name = format!("`{prefix}{}`", k.name);
        for a in k.aliases {
            name.push_str(&format!(" (`{prefix}{a}`)"));
        }
        let ock = k.ock.map(|o| format!("`{o}`")).unwrap_or_default();
        let flag = k
            .flag
            .map(|f| format!("`--{}`", f.long()))
            .unwrap_or_default();
        let mut kind = k.kind.to_string();
        let range = k.range_text();
        if !range.is_empty() {
            kind.push_str(&format!(", {range}"));
        }
        let default = if k.default.is_empty() {
            "none".to_string()
        } else {
            format!("`{}`", k.default)
        };
        out.push_str(&format!(
            "| {name} | {ock} | {flag} | {kind} | {default} | {} |\n",
            k.doc
        ));
    }
    out
}

/// The header of a README key table.
pub const MARKDOWN_HEADER: &str =
    "| TOML key | `ock.mmc.*` key | Flag | Type | Default | Meaning |\n\
                                   |---|---|---|---|---|---|\n";

// ---------------------------------------------------------------------------------------------
// Kinds
// ---------------------------------------------------------------------------------------------

/// A `tcp://host:port` URL, kept as written (trimmed); must fit the C `char[1024]`.
pub struct TcpUrl;

impl Kind for TcpUrl {
    type Value = String;
    const NAME: &'static str = "`tcp://host:port`";
    fn from_text(s: &str) -> Result<String, ConfigError> {
        url_string(s)
    }
    fn check(key: &str, v: &String) -> Result<(), ConfigError> {
        check_tcp_url(key, v)
    }
}

/// A `tcp://host:port` URL or empty.
pub struct OptTcpUrl;

impl Kind for OptTcpUrl {
    type Value = String;
    const NAME: &'static str = "`tcp://host:port` or empty";
    fn from_text(s: &str) -> Result<String, ConfigError> {
        if s.trim().is_empty() {
            Ok(String::new())
        } else {
            url_string(s)
        }
    }
    fn check(key: &str, v: &String) -> Result<(), ConfigError> {
        if v.is_empty() {
            return Ok(());
        }
        check_tcp_url(key, v)
    }
}

/// An HTTP endpoint address (`http://host:port`, `host:port`) or empty (off).
pub struct MetricsUrl;

impl Kind for MetricsUrl {
    type Value = String;
    const NAME: &'static str = "`http://host:port` or empty";
    fn from_text(s: &str) -> Result<String, ConfigError> {
        if !s.trim().is_empty() {
            parse_metrics_url(s)?;
        }
        Ok(s.trim().to_string())
    }
    fn check(key: &str, v: &String) -> Result<(), ConfigError> {
        if v.is_empty() {
            return Ok(());
        }
        parse_metrics_url(v).map_err(|e| e.for_key(key))?;
        check_capacity(key, v, URL_CAPACITY)
    }
}

/// A file path (TLS material); must fit the C `char[256]`.
pub struct Path;

impl Kind for Path {
    type Value = String;
    const NAME: &'static str = "path";
    fn from_text(s: &str) -> Result<String, ConfigError> {
        Ok(s.to_string())
    }
    fn check(key: &str, v: &String) -> Result<(), ConfigError> {
        check_capacity(key, v, TLS_PATH_CAPACITY)
    }
}

/// A byte size: bytes, or a string such as `"1GB"` ([`parse_size`]); must fit the address space.
pub struct Size;

impl Kind for Size {
    type Value = u64;
    const NAME: &'static str = "size";
    fn from_text(s: &str) -> Result<u64, ConfigError> {
        parse_size(s)
    }
    fn from_toml(v: &toml::Value) -> Result<u64, ConfigError> {
        match v {
            toml::Value::Integer(i) => u64::try_from(*i).map_err(|_| ConfigError::Value {
                value: i.to_string(),
                reason: "a size must not be negative".to_string(),
            }),
            toml::Value::String(s) => parse_size(s),
            other => Err(wrong_type(
                other,
                "a size (bytes, or a string such as \"1GB\")",
            )),
        }
    }
    fn check(key: &str, v: &u64) -> Result<(), ConfigError> {
        if usize::try_from(*v).map_or(true, |b| b > isize::MAX as usize) {
            return Err(ConfigError::Invalid {
                key: key.to_string(),
                reason: format!("{v} bytes does not fit in this machine's address space"),
            });
        }
        Ok(())
    }
}

/// An integer of type `T`.
pub struct Int<T>(PhantomData<T>);

/// The integer types keys use.
pub trait IntType: Copy + std::str::FromStr + TryFrom<i64> + Into<i128> {
    const NAME: &'static str;
}

macro_rules! int_types {
    ($($t:ty),*) => {$(
        impl IntType for $t {
            const NAME: &'static str = concat!("integer (", stringify!($t), ")");
        }
    )*};
}
int_types!(u16, u32, u64, i32);

fn int_from_toml<T: IntType>(v: &toml::Value) -> Result<T, ConfigError> {
    match v {
        toml::Value::Integer(i) => T::try_from(*i).map_err(|_| ConfigError::Value {
            value: i.to_string(),
            reason: format!("out of range for {}", std::any::type_name::<T>()),
        }),
        other => Err(wrong_type(other, "an integer")),
    }
}

impl<T: IntType> Kind for Int<T>
where
    T::Err: std::fmt::Display,
{
    type Value = T;
    const NAME: &'static str = T::NAME;
    fn from_text(s: &str) -> Result<T, ConfigError> {
        parse_int(s)
    }
    fn from_toml(v: &toml::Value) -> Result<T, ConfigError> {
        int_from_toml(v)
    }
    fn number(v: &T) -> Option<i128> {
        Some((*v).into())
    }
}

/// An integer of type `T`, or empty text (unset).
pub struct OptInt<T>(PhantomData<T>);

impl<T: IntType> Kind for OptInt<T>
where
    T::Err: std::fmt::Display,
{
    type Value = Option<T>;
    const NAME: &'static str = T::NAME;
    fn from_text(s: &str) -> Result<Option<T>, ConfigError> {
        if s.trim().is_empty() {
            Ok(None)
        } else {
            parse_int(s).map(Some)
        }
    }
    fn from_toml(v: &toml::Value) -> Result<Option<T>, ConfigError> {
        int_from_toml(v).map(Some)
    }
    fn number(v: &Option<T>) -> Option<i128> {
        v.map(Into::into)
    }
}

/// `true`/`false` (text also takes `1`/`0`, `yes`/`no`, `on`/`off`).
pub struct Bool;

impl Kind for Bool {
    type Value = bool;
    const NAME: &'static str = "bool";
    fn from_text(s: &str) -> Result<bool, ConfigError> {
        parse_bool(s)
    }
    fn from_toml(v: &toml::Value) -> Result<bool, ConfigError> {
        v.as_bool().ok_or_else(|| wrong_type(v, "true or false"))
    }
}

/// A log level: `debug`, `info`, `warn`, `error`, or 0..3.
pub struct Level;

impl Kind for Level {
    type Value = LogLevel;
    const NAME: &'static str = "`debug`, `info`, `warn`, `error` or 0..3";
    fn from_text(s: &str) -> Result<LogLevel, ConfigError> {
        LogLevel::parse(s)
    }
    fn from_toml(v: &toml::Value) -> Result<LogLevel, ConfigError> {
        match v {
            toml::Value::String(s) => LogLevel::parse(s),
            toml::Value::Integer(i) => LogLevel::parse(&i.to_string()),
            other => Err(wrong_type(other, "a log level")),
        }
    }
}
