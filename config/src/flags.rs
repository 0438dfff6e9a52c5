//! Command-line flags derived from a key table: each key with a [`Flag`] becomes a clap argument
//! whose help is the key's doc, and a flag given on the command line overrides the file.

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::table::{Flag, Input, Key};
use super::ConfigError;

/// Adds a clap argument for every key of `keys` that has a flag (its id is the key's name).
pub fn with_flags<C: 'static>(mut cmd: Command, keys: &'static [Key<C>]) -> Command {
    for k in keys {
        let Some(flag) = k.flag else { continue };
        let arg = Arg::new(k.name).long(flag.long());
        let arg = match flag {
            Flag::Value(_) => arg
                .value_name("VALUE")
                .help(format!("{} [key `{}`: {}]", k.doc, k.name, k.kind)),
            Flag::Switch(_, value) => arg
                .action(ArgAction::SetTrue)
                .help(format!("Sets `{}` = {value}: {}", k.name, k.doc)),
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

/// Applies the flags given in `m` (from a command built by [`with_flags`]) to `c`; an error names
/// the flag.
pub fn apply_flags<C: 'static>(
    keys: &'static [Key<C>],
    m: &ArgMatches,
    c: &mut C,
) -> Result<(), ConfigError> {
    for k in keys {
        let Some(flag) = k.flag else { continue };
        let text = match flag {
            Flag::Value(_) => m.get_one::<String>(k.name).cloned(),
            Flag::Switch(_, value) => m.get_flag(k.name).then(|| value.to_string()),
        };
        if let Some(text) = text {
            (k.apply)(c, Input::Text(&text))
                .map_err(|e| e.for_key(&format!("--{}", flag.long())))?;
        }
    }
    Ok(())
}
