//! The phases of a run, one file each: every phase reads what it needs,
//! acts, and says where the run goes next (a `Step`).

mod handing_off;
mod pending;
mod processing;
mod provisioning;
mod replaying;
mod tearing_down;
