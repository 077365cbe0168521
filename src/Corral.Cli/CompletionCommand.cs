using System.CommandLine;
using Corral.Common;

namespace Corral.Cli;

/// <summary>
/// `corral completion bash`: a bash completion script. It asks the CLI itself for suggestions through
/// System.CommandLine's `[suggest:POSITION] "LINE"` directive, so it always knows every command and option.
/// </summary>
internal static class CompletionCommand
{
    public const string BashScript = """
        # bash completion for corral (from `corral completion bash`)
        _corral_complete() {
          local IFS=$'\n'
          local suggestions
          suggestions=$("${COMP_WORDS[0]}" "[suggest:${COMP_POINT}]" "${COMP_LINE}" 2>/dev/null) || return 0
          COMPREPLY=($(compgen -W "${suggestions}" -- "${COMP_WORDS[COMP_CWORD]}"))
        }
        complete -o default -F _corral_complete corral ./corral

        """;

    public static Command Create()
    {
        // Checked in the action, not with AcceptOnlyFromAmong: its refusal is two lines, Corral's errors one.
        var shell = new Argument<string>("SHELL") { Description = "The shell: bash" };
        var command = new Command("completion", "Print a shell completion script: source <(corral completion bash), or save it to /etc/bash_completion.d/corral") { shell };
        command.SetAction(parse =>
        {
            if (parse.GetValue(shell) != "bash")
            {
                throw CorralException.Invalid($"no completion for shell '{parse.GetValue(shell)}': only bash");
            }

            Console.Write(BashScript);
            return 0;
        });
        return command;
    }
}
