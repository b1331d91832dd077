mod attacks;
mod common;
mod delta;
mod endpoints;
mod shutdown;
mod source;
