using System.Text.Json;
using Cowfish.Files;

namespace Cowfish.Cli;

/// <summary>The verbs over whole volumes: <c>volume create|list|delete|rename</c> and <c>snapshot</c>.</summary>
internal static class VolumeCommands
{
    public static readonly Command[] All =
    [
        new("volume", "volume create|list|delete|rename POOL ...", "Create, list, delete (giving its space back) or rename volumes.", Volume,
            Flags: ["--json"], Details: VolumeHelp, PoolArgument: 1),
        new("snapshot", "snapshot POOL SRC_VOLUME NEW_VOLUME [--readonly]", "O(1) snapshot: a new volume that shares all of the source's data.", Snapshot,
            Flags: ["--readonly"]),
    ];

    private const string VolumeHelp = """

        volume create POOL NAME             create an empty volume
        volume list POOL [--json]           list volumes and snapshots (read-only flag, creation time, origin)
        volume delete POOL NAME             delete a volume or snapshot and give back the space only it used
        volume rename POOL NAME NEW_NAME    rename a volume or snapshot

        """;

    private static int Volume(Args a, Io io)
    {
        if (a.Positional.Count < 2) throw new UsageException("expected a volume verb (create, list, delete, rename) and POOL");
        string verb = a.Positional[0];
        var rest = a.Positional.Skip(2).ToArray();
        void Need(int n, string names)
        {
            if (rest.Length != n) throw new UsageException($"volume {verb} takes POOL{names}");
        }
        if (verb is not ("create" or "list" or "delete" or "rename")) throw new UsageException($"unknown volume verb '{verb}'");
        if (verb != "list" && a.Has("--json")) throw new UsageException("--json applies to volume list only");

        using var fs = io.Pools.OpenFiles(a.Positional[1]);
        switch (verb)
        {
            case "create":
                Need(1, " NAME");
                fs.CreateVolume(rest[0]);
                return ExitCodes.Ok;
            case "list":
                Need(0, "");
                List(fs, a.Has("--json"), io.Out);
                return ExitCodes.Ok;
            case "delete":
            {
                Need(1, " NAME");
                ulong before = fs.Pool.Info().UsedBlocks;
                fs.DeleteVolume(rest[0]);
                // DeleteVolume only unlinks the tree; the blocks come back over later commits. A CLI
                // process ends here, so run those commits now and leave the pool with the space free.
                fs.Reclaim();
                var info = fs.Pool.Info();
                ulong freed = before > info.UsedBlocks ? before - info.UsedBlocks : 0;
                io.Out.WriteLine($"deleted volume '{rest[0]}': {Cli.FormatBytes(freed * (ulong)info.BlockSize)} freed");
                return ExitCodes.Ok;
            }
            default:
                Need(2, " NAME NEW_NAME");
                fs.RenameVolume(rest[0], rest[1]);
                return ExitCodes.Ok;
        }
    }

    private static void List(FileSystem fs, bool json, TextWriter o)
    {
        var volumes = fs.ListVolumes().OrderBy(v => v.Name, StringComparer.Ordinal).ToList();
        var byId = volumes.ToDictionary(v => v.Id, v => v.Name);
        string? OriginName(VolumeInfo v) => v.Origin is { } id ? byId.GetValueOrDefault(id) : null;
        if (json)
        {
            o.WriteLine(JsonSerializer.Serialize(volumes.Select(v => new
            {
                name = v.Name,
                read_only = v.ReadOnly,
                created = v.Created,
                id = v.Id,
                origin = OriginName(v),
                origin_id = v.Origin,
                received_from = v.Received,
                tree = v.Tree.Value,
            }), Cli.Json));
            return;
        }
        if (volumes.Count == 0) return;
        int width = Math.Max(4, volumes.Max(v => v.Name.Length));
        o.WriteLine($"{"NAME".PadRight(width)}  MODE  CREATED                 ORIGIN");
        foreach (var v in volumes)
        {
            string origin = v.Origin is null ? "-" : OriginName(v) ?? $"(deleted {v.Origin})";
            o.WriteLine($"{v.Name.PadRight(width)}  {(v.ReadOnly ? "ro" : "rw"),-4}  {v.Created.ToUniversalTime():yyyy-MM-dd HH:mm:ss}Z    {origin}");
        }
    }

    private static int Snapshot(Args a, Io io)
    {
        a.Expect(3, "POOL SRC_VOLUME NEW_VOLUME");
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        fs.Snapshot(a.Positional[1], a.Positional[2], readOnly: a.Has("--readonly"));
        return ExitCodes.Ok;
    }
}
