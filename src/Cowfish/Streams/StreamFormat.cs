using Cowfish.Format;

namespace Cowfish.Streams;

/// <summary>
/// Constants of send stream format v1 (docs/send-stream.md gives every byte). A stream is a 16-byte
/// header, then records: a 20-byte record header (payload length u32, type u16, flags u16, sequence
/// u64, CRC32C u32) and the payload. The CRC covers the record header, with its CRC field zeroed,
/// and the payload.
/// </summary>
internal static class StreamFormat
{
    /// <summary>"COWFSEND".</summary>
    public static ReadOnlySpan<byte> Magic => "COWFSEND"u8;
    public const uint Version = 1;
    public const int HeaderSize = 16;
    public const int RecordHeaderSize = 20;
    public const int CrcOffset = 16;
    public const int BlockSize = Layout.BlockSize;
    /// <summary>Most blocks one WRITE, CLONE or PREALLOC record covers (one extent record's worth).</summary>
    public const uint MaxBlocksPerRecord = 256;
    /// <summary>Largest payload: a WRITE of 256 blocks and its 20 bytes of fields. Every record is checked against its own bound too.</summary>
    public const int MaxPayload = 20 + (int)MaxBlocksPerRecord * BlockSize;
    /// <summary>File blocks a record may name lie below 2^50 bytes / 4096.</summary>
    public const ulong MaxFileBlocks = (1UL << 50) / BlockSize;
    public const int MaxNameBytes = 255;
    public const int MaxXattrValue = 1024;
    public const int MaxSymlinkTarget = 1024;
    public const int MaxVolumeName = 200;
}

/// <summary>Record types of stream format v1.</summary>
internal enum RecordType : ushort
{
    Begin = 1,
    Resume = 2,
    End = 3,
    VolumeHeader = 10,
    Inode = 11,
    RemoveInode = 12,
    Link = 13,
    Unlink = 14,
    SetXattr = 15,
    RemoveXattr = 16,
    Write = 20,
    Clone = 21,
    Punch = 22,
    Prealloc = 23,
    CloneFile = 24,
}
