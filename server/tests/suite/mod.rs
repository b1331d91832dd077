mod attacks;
mod common;
mod delta;
mod endpoints;
mod longpoll;
mod shutdown;
mod source;
