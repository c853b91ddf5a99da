using Cowfish.Allocation;
using Cowfish.Devices;
using Cowfish.Format;

namespace Cowfish.Transactions;

/// <summary>Creating and opening pools.</summary>
internal static class PoolFormatter
{
    /// <summary>Blocks in a new pool; it grows on demand.</summary>
    public const ulong InitialBlocks = 256;

    public static Pool Format(IBlockDevice device, PoolOptions options, bool ownsDevice)
    {
        var zero = new byte[Layout.BlockSize];
        device.Write(0, zero);
        device.Write(Layout.BlockSize, zero);
        var map = new SpaceMap(InitialBlocks);
        var sb = new Superblock
        {
            PoolId = Guid.NewGuid(),
            Generation = 0,
            TotalBlocks = InitialBlocks,
            NextTreeId = 1,
            NextDropSeq = 1,
            CreatedUnixSeconds = DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
        };
        // Slot 1 counts as holding the (empty) previous state, so the first commit goes to slot 0.
        var pool = new Pool(device, ownsDevice, options, sb, slot: 1, map);
        try
        {
            using var tx = pool.BeginWrite();
            tx.Commit();
            return pool;
        }
        catch
        {
            pool.Dispose();
            throw;
        }
    }
}

internal static class PoolLoader
{
    public static Pool Load(IBlockDevice device, PoolOptions options, bool ownsDevice)
    {
        var states = new Superblock.SlotState[2];
        var sbs = new Superblock?[2];
        var whys = new string[2];
        var buf = new byte[Superblock.EncodedSize];
        for (int slot = 0; slot < 2; slot++)
        {
            device.Read(Layout.ByteOffset((ulong)slot), buf);
            states[slot] = Superblock.TryDecode(buf, out sbs[slot], out whys[slot]);
        }
        // A slot written by a newer format version means the pool has moved on: opening the older
        // slot would roll it back, and the next commit would overwrite the newer state.
        for (int slot = 0; slot < 2; slot++)
            if (states[slot] == Superblock.SlotState.BadVersion)
                throw new FormatVersionException(uint.Parse(whys[slot]["version ".Length..]), Layout.FormatVersion);
        int best = -1;
        for (int slot = 0; slot < 2; slot++)
            if (sbs[slot] is { } s && (best < 0 || s.Generation > sbs[best]!.Generation)) best = slot;
        if (best < 0)
        {
            if (states.All(s => s == Superblock.SlotState.NotAPool))
                throw new NotAPoolException($"not a Cowfish pool: no superblock magic in block 0 or 1 ({whys[0]})");
            int bad = states[0] != Superblock.SlotState.NotAPool ? 0 : 1;
            throw new CorruptionException((ulong)bad, "superblock", "a valid copy in block 0 or 1", $"none ({whys[0]}; {whys[1]})");
        }
        var sb = sbs[best]!;
        long needed = Layout.ByteOffset(sb.TotalBlocks);
        if (device.Length < needed)
            throw new CorruptionException(0, "pool file length", $">= {needed} bytes for {sb.TotalBlocks} blocks", $"{device.Length} bytes");
        var map = new SpaceMap(sb.TotalBlocks);
        var pool = new Pool(device, ownsDevice, options, sb, best, map);
        try
        {
            long epoch = pool.Store.Pages.Enter();
            try { SpaceMapStore.Load(map, pool.Store, sb.SpaceMapRoot); }
            finally { pool.Store.Pages.Exit(epoch); }
            return pool;
        }
        catch
        {
            pool.Dispose();
            throw;
        }
    }
}
