//! Reading the environment: the [`Env`] seam that tests fake, and [`Env::over`], the one way
//! an environment variable overrides a setting. Which variables exist lives with their section.

use std::collections::BTreeMap;

use anyhow::Context as _;
use secrecy::SecretString;

/// Reads the environment; injected so that tests never mutate the process environment.
pub trait Env {
    /// The value of `name`, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl dyn Env + '_ {
    /// `name`'s value if it is set, else `file` (the config file's, or `None`): environment
    /// over file. A value that does not parse is an error that names the variable.
    pub fn over<T: EnvValue>(&self, name: &str, file: Option<T>) -> anyhow::Result<Option<T>> {
        match self.var(name) {
            Some(text) => T::parse(text)
                .map(Some)
                .with_context(|| format!("{name} is not {}", T::EXPECTED)),
            None => Ok(file),
        }
    }
}

/// A setting an environment variable can hold.
pub trait EnvValue: Sized {
    /// What the text must be, for the error when it is not.
    const EXPECTED: &'static str;
    /// The value the variable's text stands for.
    fn parse(text: String) -> anyhow::Result<Self>;
}

macro_rules! numbers {
    ($($number:ty),*) => {$(
        impl EnvValue for $number {
            const EXPECTED: &'static str = "a number";
            fn parse(text: String) -> anyhow::Result<Self> {
                Ok(text.parse()?)
            }
        }
    )*};
}
numbers!(u32, u64, usize);

impl EnvValue for std::net::SocketAddr {
    const EXPECTED: &'static str = "an address such as 127.0.0.1:9464";
    fn parse(text: String) -> anyhow::Result<Self> {
        Ok(text.parse()?)
    }
}

impl EnvValue for String {
    const EXPECTED: &'static str = "text";
    fn parse(text: String) -> anyhow::Result<Self> {
        Ok(text)
    }
}

impl EnvValue for SecretString {
    const EXPECTED: &'static str = "text";
    fn parse(text: String) -> anyhow::Result<Self> {
        Ok(text.into())
    }
}

/// A comma-separated list; blanks around and between the commas are dropped.
impl EnvValue for Vec<String> {
    const EXPECTED: &'static str = "a comma-separated list";
    fn parse(text: String) -> anyhow::Result<Self> {
        Ok(text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

/// `name=value` pairs separated by commas (Azure's deployments: `gpt-image-2=images-prod`);
/// blanks around names, values and commas are dropped.
impl EnvValue for BTreeMap<String, String> {
    const EXPECTED: &'static str = "comma-separated `name=value` pairs";
    fn parse(text: String) -> anyhow::Result<Self> {
        text.split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair
                    .split_once('=')
                    .map(|(name, value)| (name.trim(), value.trim()))
                    .filter(|(name, value)| !name.is_empty() && !value.is_empty())
                    .with_context(|| format!("`{pair}` is not `name=value`"))?;
                Ok((name.to_owned(), value.to_owned()))
            })
            .collect()
    }
}
