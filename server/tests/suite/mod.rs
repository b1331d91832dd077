mod attacks;
mod common;
mod endpoints;
mod shutdown;
mod source;
