namespace Cowfish.Streams;

/// <summary>How <see cref="SendStream.Write"/> runs.</summary>
public sealed record SendOptions
{
    /// <summary>
    /// A token from the receiver of an interrupted stream (<see cref="ReceiveStream.Pending"/>): the
    /// stream then starts where the receiver stopped. It is only accepted for the same snapshot and parent.
    /// </summary>
    public string? ResumeToken { get; init; }

    /// <summary>Called after each record with the bytes of the stream framed so far (for progress displays).</summary>
    public Action<long>? Progress { get; init; }
}

/// <summary>What a send wrote: bytes put on the output, records, and how much file data went as data and as clones.</summary>
public sealed record SendResult(long BytesWritten, long StreamLength, long Records, long DataBytes, long ClonedBytes, bool Incremental);

/// <summary>How <see cref="ReceiveStream.Apply"/> runs.</summary>
public sealed record ReceiveOptions
{
    /// <summary>Name for the received snapshot; by default the name it had on the sender.</summary>
    public string? Name { get; init; }

    /// <summary>Called after each batch with the bytes of input read so far.</summary>
    public Action<long>? Progress { get; init; }

    /// <summary>File data applied per transaction (each transaction is a resume point).</summary>
    internal long BatchBytes { get; init; } = 8 << 20;

    /// <summary>Records applied per transaction at most: a batch is applied under the writer lock, so it stays a few milliseconds of work.</summary>
    internal int BatchRecords { get; init; } = 1024;

    /// <summary>File data received between flushes that make the resume point durable.</summary>
    internal long FlushBytes { get; init; } = 256 << 20;
}

/// <summary>A snapshot that was received: its name here, the identity it was sent with, and its parent's if incremental.</summary>
public sealed record ReceiveResult(string Name, Guid Snapshot, Guid? Parent, long BytesRead, bool Resumed);

/// <summary>
/// A receive that stopped before its end record: the hidden partial snapshot it was building, how far
/// it got in the stream, and the token that lets a sender continue from there.
/// </summary>
public sealed record PendingReceive(string Name, Guid Snapshot, Guid? Parent, long StreamOffset, string ResumeToken);
