mod attacks;
mod common;
mod endpoints;
mod longpoll;
mod shutdown;
mod source;
