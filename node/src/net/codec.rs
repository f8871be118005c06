//! A request-response codec for any pair of agora wire types: the encoded
//! value, read with a hard size limit (the stream is one message each way).

use std::io;
use std::marker::PhantomData;

use agora_protocol::codec::{self, Wire};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

pub struct WireCodec<Req, Res>(PhantomData<(Req, Res)>);

impl<Req, Res> Default for WireCodec<Req, Res> {
    fn default() -> Self {
        WireCodec(PhantomData)
    }
}

impl<Req, Res> Clone for WireCodec<Req, Res> {
    fn clone(&self) -> Self {
        WireCodec(PhantomData)
    }
}

async fn read_limited<T: Wire, R: AsyncRead + Unpin + Send>(io: &mut R) -> io::Result<T> {
    let mut buf = Vec::new();
    // One byte over the limit tells "too large" from "exactly the limit".
    io.take(T::MAX_BYTES as u64 + 1).read_to_end(&mut buf).await?;
    codec::decode(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

async fn write_value<T: Wire, W: AsyncWrite + Unpin + Send>(io: &mut W, value: &T) -> io::Result<()> {
    let bytes = codec::encode(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    io.write_all(&bytes).await?;
    io.close().await
}

impl<Req, Res> libp2p::request_response::Codec for WireCodec<Req, Res>
where
    Req: Wire + Send + Sync + 'static,
    Res: Wire + Send + Sync + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Res;

    async fn read_request<T: AsyncRead + Unpin + Send>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req> {
        read_limited(io).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Res> {
        read_limited(io).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Req,
    ) -> io::Result<()> {
        write_value(io, &req).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Res,
    ) -> io::Result<()> {
        write_value(io, &res).await
    }
}
