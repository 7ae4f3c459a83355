#[cfg(feature = "num")]
mod glist;
#[cfg(feature = "num")]
mod list;
mod map;
#[cfg(feature = "merkle")]
mod merkle_reg;
mod mvreg;
mod orswot;
mod vclock;
