"""Every string the bot itself says, in English and Chinese (`ui.lang`, or the user's/chat's language).

English counts pick their noun with `{count|exchange|exchanges}` (singular for exactly 1); Chinese needs none.
"""
from __future__ import annotations

import re

LANGS = ("en", "zh")

MESSAGES: dict[str, dict[str, str]] = {
    # ----- help
    "help_title": {"en": "Commands:", "zh": "命令："},
    "help_footer": {"en": "Anything else you write is said to the character.",
                    "zh": "其他消息都会发给角色。"},
    "help_help": {"en": "this list", "zh": "显示本列表"},
    "help_start": {"en": "show the character's greeting", "zh": "显示角色的开场白"},
    "help_char": {"en": "list | show [NAME] | use NAME [GREETING#] | import (attach a card) | delete NAME",
                  "zh": "list 列出 | show [名字] 查看 | use 名字 [开场白编号] 切换 | import 导入（附上角色卡）"
                        " | delete 名字 删除"},
    "help_reset": {"en": "start the conversation over (params are kept)", "zh": "重新开始对话（保留参数）"},
    "help_undo": {"en": "[N] take back the last N exchanges (default 1)", "zh": "[N] 撤回最近 N 轮对话（默认 1）"},
    "help_regen": {"en": "a new reply to your last message (the earlier ones stay: ◀ ▶)",
                   "zh": "重新生成最后一条回复（之前的版本保留：◀ ▶）"},
    "help_params": {"en": "show | set NAME VALUE [NAME VALUE ...] | reset: sampling parameters",
                    "zh": "show 查看 | set 名称 值 [名称 值 ...] 设置 | reset 恢复默认：采样参数"},
    "help_format": {"en": "names | user-assistant: how turns are labelled", "zh": "names | user-assistant：对话的称呼格式"},
    "help_continue": {"en": "the character goes on speaking", "zh": "让角色继续说"},
    "help_as": {"en": "NAME text: say a line as someone else (a narrator, another character)",
                "zh": "名字 内容：以其他身份说一句（旁白、其他角色）"},
    "help_reply": {"en": "NAME: the next reply is spoken by NAME", "zh": "名字：下一条回复由该名字说出"},
    "help_cast": {"en": "add NAME | remove NAME | list: several characters in this channel",
                  "zh": "add 名字 加入 | remove 名字 移除 | list 列出：本频道的多个角色"},
    "help_persona": {"en": "NAME [description] | clear: who you are in this channel",
                     "zh": "名字 [描述] | clear 清除：你在本频道中的身份"},
    "help_edit": {"en": "text: replace the character's last reply with your text", "zh": "内容：把角色最后一条回复改成你的内容"},
    "help_suggest": {"en": "the model suggests your next line", "zh": "让模型建议你的下一句"},
    "help_save": {"en": "NAME: save this conversation", "zh": "名字：保存当前对话"},
    "help_load": {"en": "NAME: restore a saved conversation", "zh": "名字：恢复已保存的对话"},
    "help_saves": {"en": "list saved conversations", "zh": "列出已保存的对话"},
    "help_delsave": {"en": "NAME: delete a save", "zh": "名字：删除存档"},
    "help_debug": {"en": "[N] [ids]: what the model has read (last N tokens)", "zh": "[N] [ids]：查看模型读入的内容（最近 N 个 token）"},
    "help_export": {"en": "[json]: the transcript as a file", "zh": "[json]：导出聊天记录文件"},
    "help_status": {"en": "model, queue and speed", "zh": "模型、队列与速度"},
    "help_lang": {"en": "en | zh: the bot's language in this chat", "zh": "en | zh：本聊天中机器人的语言"},
    "help_dashboard": {"en": "a sign-in link to the admin web page (admins; sent only to you)",
                       "zh": "管理网页的登录链接（管理员；只发给你）"},
    "help_replymode": {"en": "mention | all: in groups, answer only mentions/replies or every message",
                       "zh": "mention | all：群聊中只回应提及/回复，或回应所有消息"},
    # ----- errors and refusals
    "unknown_command": {"en": "Unknown command /{name}, see /help.", "zh": "未知命令 /{name}，请看 /help。"},
    "bad_usage": {"en": "Usage: /{name} {usage}", "zh": "用法：/{name} {usage}"},
    "not_admin": {"en": "Only admins can do that here.", "zh": "只有管理员可以在这里这样做。"},
    "not_bot_admin": {"en": "Only the bot's admins can change the shared character library.",
                      "zh": "只有机器人的管理员可以修改共享角色库。"},
    "card_name_taken": {"en": "A character named {name!r} is already in the library; rename the card (its name "
                              "field) and import it again.",
                        "zh": "角色库中已有名为 {name!r} 的角色；请修改角色卡的名字后再导入。"},
    "card_in_dir": {"en": "{name} comes with the bot (its characters/ directory or the samples); the bot's owner "
                          "removes it there.",
                    "zh": "{name} 来自机器人自带的角色（characters/ 目录或示例角色），需由机器人所有者在那里删除。"},
    "too_many_cards": {"en": "You already have {limit} characters of your own; delete one with /char delete NAME.",
                       "zh": "你已有 {limit} 个自己的角色，请先用 /char delete 名字 删除一个。"},
    "library_full": {"en": "The character library is full ({limit} MiB of cards); ask the bot's owner.",
                     "zh": "角色库已满（{limit} MiB）；请联系机器人的所有者。"},
    "too_many_channels": {"en": "You have started {limit} conversations with this bot, the most one person may; "
                                "continue one of them.",
                          "zh": "你已经与本机器人开始了 {limit} 个对话，已达上限；请继续其中一个。"},
    "channels_full": {"en": "The bot cannot start more conversations; ask its owner.",
                      "zh": "机器人无法再开始新的对话；请联系其所有者。"},
    "busy": {"en": "I'm still answering earlier messages here; please wait a moment.",
             "zh": "我还在回复之前的消息，请稍等。"},
    "rate_limited": {"en": "You're sending messages too fast; please slow down.", "zh": "你发消息太快了，请慢一点。"},
    "empty_message": {"en": "There is nothing to say in that message.", "zh": "消息内容为空。"},
    "message_truncated": {"en": "(Your message was too long; only the first {limit} characters were read.)",
                          "zh": "（你的消息太长，只读取了前 {limit} 个字符。）"},
    "no_character": {"en": "No character is available. Add a card to characters/ or import one with /char import.",
                     "zh": "没有可用的角色。请把角色卡放进 characters/ 或用 /char import 导入。"},
    "unknown_character": {"en": "No character named {name!r}. Try /char list.", "zh": "没有名为 {name!r} 的角色。请看 /char list。"},
    "bad_greeting": {"en": "{name} has greetings 0 to {high}.", "zh": "{name} 的开场白编号为 0 到 {high}。"},
    "bad_count": {"en": "The number must be a whole number of at least {low}.", "zh": "数字必须是不小于 {low} 的整数。"},
    "nothing_to_regen": {"en": "There is no reply to regenerate yet.", "zh": "还没有可以重新生成的回复。"},
    "nothing_to_edit": {"en": "There is no reply to edit yet.", "zh": "还没有可以修改的回复。"},
    "bad_chat_format": {"en": "Format must be one of: {valid}.", "zh": "格式必须是：{valid}。"},
    "shutting_down": {"en": "The bot is restarting; please try again in a moment.", "zh": "机器人正在重启，请稍后再试。"},
    "cluster_unavailable": {"en": "The bot cannot reach its workers right now; please try again in a moment.",
                            "zh": "机器人暂时无法连接到后端，请稍后再试。"},
    "engine_error": {"en": "The model failed on this reply; please try again.", "zh": "模型生成失败，请重试。"},
    "not_stored": {"en": "That could not be stored; nothing was changed. Please try again.",
                   "zh": "无法保存，没有做任何更改。请重试。"},
    "reply_cancelled": {"en": "(reply cancelled)", "zh": "（回复已取消）"},
    # ----- swipes and /stop
    "help_stop": {"en": "stop the reply being written (what it wrote so far stays)",
                  "zh": "停止正在写的回复（已写的部分保留）"},
    "reply_stopped": {"en": "(stopped before it wrote anything)", "zh": "（在写出任何内容前已停止）"},
    "reply_queued": {"en": "(queued, {ahead} ahead)", "zh": "（排队中，前面还有 {ahead} 个）"},
    "nothing_to_stop": {"en": "Nothing is being written here.", "zh": "这里没有正在写的回复。"},
    "stop_not_yours": {"en": "Only the person this reply answers, or an admin, can stop it.",
                       "zh": "只有这条回复所回应的人或管理员可以停止它。"},
    "button_not_yours": {"en": "These buttons are for the person this reply answers, and for admins.",
                         "zh": "这些按钮只供这条回复所回应的人和管理员使用。"},
    "swipe_too_old": {"en": "This reply can no longer be changed: only the latest reply can.",
                      "zh": "这条回复已无法更改：只能更改最新的回复。"},
    "empty_reply": {"en": "(the character said nothing)", "zh": "（角色没有说话）"},
    "card_error": {"en": "Cannot import that card: {problem}", "zh": "无法导入该角色卡：{problem}"},
    "import_needs_file": {"en": "Attach a card file (PNG, JSON, YAML, TXT or CHARX) to /char import.",
                          "zh": "请在 /char import 时附上角色卡文件（PNG、JSON、YAML、TXT 或 CHARX）。"},
    "param_error": {"en": "{problem}. Nothing was changed.", "zh": "{problem}。没有做任何更改。"},
    # ----- answers
    "char_list": {"en": "Characters ({count}):", "zh": "角色（{count} 个）："},
    "char_list_current": {"en": "(in use here)", "zh": "（当前使用）"},
    "char_using": {"en": "Now talking with {name}.", "zh": "现在与 {name} 对话。"},
    "char_imported": {"en": "Imported {name} ({format}).", "zh": "已导入 {name}（{format}）。"},
    "char_imported_own": {"en": "Imported {name} ({format}) as your own character: only you see it.",
                          "zh": "已导入 {name}（{format}）为你自己的角色，只有你能看到。"},
    "char_deleted": {"en": "Deleted {name} from the library.", "zh": "已从角色库删除 {name}。"},
    "char_yours": {"en": "(yours)", "zh": "（你的）"},
    "char_owned_by": {"en": "(of {owner})", "zh": "（属于 {owner}）"},
    "char_already": {"en": "{name} is already in the library.", "zh": "{name} 已在角色库中。"},
    "reset_done": {"en": "Conversation reset.", "zh": "对话已重置。"},
    "undo_done": {"en": "Took back {count} {count|exchange|exchanges}.", "zh": "已撤回 {count} 轮对话。"},
    "undo_nothing": {"en": "Nothing to take back.", "zh": "没有可撤回的内容。"},
    "params_title": {"en": "Sampling parameters (* = set in this chat):", "zh": "采样参数（* = 本聊天中已修改）："},
    "params_context": {"en": "Context: {used} of {limit} tokens ({percent}%).", "zh": "上下文：已用 {used} / {limit} 个 token（{percent}%）。"},
    "params_format": {"en": "Format: {format}", "zh": "格式：{format}"},
    "params_set": {"en": "Set {changes}.", "zh": "已设置 {changes}。"},
    "params_reset": {"en": "Parameters reset to the defaults.", "zh": "参数已恢复默认。"},
    "format_set": {"en": "Format set to {format}; the conversation was restarted.", "zh": "格式已设为 {format}，对话已重新开始。"},
    "lang_set": {"en": "Language set to English.", "zh": "语言已设为中文。"},
    "replymode_set": {"en": "Reply mode: {mode}.", "zh": "回复模式：{mode}。"},
    "replymode_mention": {"en": "answer only when mentioned or replied to", "zh": "只在被提及或回复时回应"},
    "replymode_all": {"en": "answer every message", "zh": "回应每条消息"},
    "edit_done": {"en": "Replaced the last reply.", "zh": "已替换最后一条回复。"},
    "suggest_result": {"en": "Suggestion: {text}", "zh": "建议：{text}"},
    "reply_next": {"en": "The next reply will be spoken by {name}.", "zh": "下一条回复将由 {name} 说出。"},
    # ----- scenes (/cast, /persona)
    "cast_list": {"en": "In this channel ({count} of {limit}):", "zh": "本频道的角色（{count} / {limit}）："},
    "cast_own": {"en": "this channel's character", "zh": "本频道的主角色"},
    "cast_added": {"en": "{name} joins the scene.", "zh": "{name} 加入了场景。"},
    "cast_removed": {"en": "{name} leaves the scene.", "zh": "{name} 离开了场景。"},
    "cast_already": {"en": "{name} is already in this channel.", "zh": "{name} 已在本频道中。"},
    "cast_full": {"en": "A channel holds at most {limit} characters; remove one with /cast remove NAME.",
                  "zh": "一个频道最多 {limit} 个角色；请先用 /cast remove 名字 移除一个。"},
    "cast_unknown": {"en": "Nobody called {name!r} is in this channel. See /cast.",
                     "zh": "本频道中没有名为 {name!r} 的角色。请看 /cast。"},
    "cast_last": {"en": "{name} is the only character here; a channel keeps at least one (switch with /char use).",
                  "zh": "{name} 是这里唯一的角色；频道至少保留一个角色（可用 /char use 切换）。"},
    "cast_first": {"en": "{name} is this channel's own character; switch with /char use, or remove the others.",
                   "zh": "{name} 是本频道的主角色；可用 /char use 切换，或移除其他角色。"},
    "persona_set": {"en": "You are {name} in this channel.", "zh": "你在本频道中的身份是 {name}。"},
    "persona_is": {"en": "You are {name} in this channel: {description}", "zh": "你在本频道中的身份是 {name}：{description}"},
    "persona_none": {"en": "You have no persona here; your lines go under {name}. Set one with /persona NAME [description].",
                     "zh": "你在这里没有设定身份，你的消息署名为 {name}。可用 /persona 名字 [描述] 设定。"},
    "persona_cleared": {"en": "Persona cleared; your lines go under {name} again.",
                        "zh": "已清除身份，你的消息重新署名为 {name}。"},
    "persona_empty_name": {"en": "That name has nothing left once line breaks and ':' are taken out; choose another.",
                           "zh": "去掉换行和冒号后这个名字是空的，请换一个。"},
    "saved": {"en": "Saved as {name!r}.", "zh": "已保存为 {name!r}。"},
    "loaded": {"en": "Restored {name!r}.", "zh": "已恢复 {name!r}。"},
    "deleted_save": {"en": "Deleted {name!r}.", "zh": "已删除 {name!r}。"},
    "unknown_save": {"en": "No save named {name!r}. See /saves.", "zh": "没有名为 {name!r} 的存档。请看 /saves。"},
    "too_many_saves": {"en": "This chat already has {limit} saves; delete one with /delsave.",
                       "zh": "本聊天已有 {limit} 个存档，请先用 /delsave 删除一个。"},
    "too_many_user_saves": {"en": "You already have {limit} saves in all your chats; delete one with /delsave.",
                            "zh": "你在所有聊天中已有 {limit} 个存档，请先用 /delsave 删除一个。"},
    "saves_full": {"en": "The bot cannot store more saves; ask its owner.", "zh": "机器人无法再保存存档；请联系其所有者。"},
    "bad_save_name": {"en": "A save name is 1 to 64 letters, digits, '-' or '_'.", "zh": "存档名为 1 到 64 个字母、数字、'-' 或 '_'。"},
    "nothing_to_save": {"en": "There is no conversation to save yet.", "zh": "还没有可以保存的对话。"},
    "save_character_missing": {"en": "The character of save {name!r} is no longer in the library.",
                               "zh": "存档 {name!r} 的角色已不在角色库中。"},
    "card_tags": {"en": "Tags", "zh": "标签"},
    "card_description": {"en": "Description", "zh": "描述"},
    "card_personality": {"en": "Personality", "zh": "性格"},
    "card_scenario": {"en": "Scenario", "zh": "场景"},
    "card_by": {"en": "by", "zh": "作者"},
    "card_greetings": {"en": "Greetings: {count} (use /char use {name} N, N = 0..{high})",
                       "zh": "开场白：{count} 个（使用 /char use {name} N，N = 0..{high}）"},
    "card_lorebook": {"en": "Lorebook: {count} {count|entry|entries}", "zh": "世界书：{count} 条"},
    "saves_list": {"en": "Saves ({count}):", "zh": "存档（{count} 个）："},
    "saves_none": {"en": "No saves yet. Use /save NAME.", "zh": "还没有存档。使用 /save 名字。"},
    "debug_summary": {"en": "State has read {tokens} {tokens|token|tokens} ({turns} {turns|exchange|exchanges} since the "
                            "character's prompt).",
                      "zh": "状态已读入 {tokens} 个 token（角色提示之后 {turns} 轮对话）。"},
    "debug_last_fed": {"en": "Last turn as fed:", "zh": "最后一轮实际输入："},
    "debug_tail": {"en": "Last {count} {count|token|tokens}:", "zh": "最近 {count} 个 token："},
    "export_done": {"en": "Transcript attached.", "zh": "聊天记录已附上。"},
    # ----- the boundary: terminal, attachments, platforms
    "help_quit": {"en": "leave the chat (Ctrl-D and Ctrl-C leave too)", "zh": "退出聊天（Ctrl-D、Ctrl-C 也可以）"},
    "help_terminal_import": {"en": "/char import PATH imports a card file from this computer.",
                             "zh": "/char import 路径：从本机导入角色卡文件。"},
    "bye": {"en": "Bye.", "zh": "再见。"},
    "private_undeliverable": {"en": "That answer is for you only, and I cannot write to you privately: start a "
                                    "private chat with me, then ask again.",
                              "zh": "这条回复只能给你看，但我无法私信你：请先与我私聊，然后再试一次。"},
    "file_written": {"en": "[file {name}, {size} {size|byte|bytes}, written to {path}]",
                     "zh": "[文件 {name}，{size} 字节，已写入 {path}]"},
    "file_not_written": {"en": "[file {name}, {size} {size|byte|bytes}, not written: {problem}]",
                         "zh": "[文件 {name}，{size} 字节，未能写入：{problem}]"},
    "status": {"en": "Model: {model}\nDevice: {device}\nQueue: {queue} {queue|turn|turns} in progress\nChannels: {channels} "
                     "known, {hot} in memory\nSpeed: {tps:.1f} tokens/s over the last minute",
               "zh": "模型：{model}\n设备：{device}\n队列：{queue} 个进行中\n频道：已知 {channels} 个，内存中 {hot} 个\n"
                     "速度：最近一分钟 {tps:.1f} token/秒"},
    # ----- the admin web page
    "dashboard_off": {"en": "The admin web page is off; the bot's owner turns it on with [dashboard] port in "
                            "rwkv-bot.toml.",
                      "zh": "管理网页未开启；机器人主人可在 rwkv-bot.toml 中设置 [dashboard] port 开启。"},
    "dashboard_link": {"en": "Your sign-in link to the admin page (works once, for {minutes} minutes; do not share "
                             "it):\n{url}",
                       "zh": "管理网页登录链接（仅可使用一次，{minutes} 分钟内有效；请勿分享）：\n{url}"},
    "dashboard_no_channel": {"en": "That channel is not there any more.", "zh": "该频道已不存在。"},
    "dashboard_no_card": {"en": "That character is not in the library any more.", "zh": "该角色已不在角色库中。"},
    "dashboard_nothing_changed": {"en": "Nothing was changed.", "zh": "没有做任何更改。"},
    "signin_unknown": {"en": "This sign-in link is not valid. Ask for a new one with /dashboard.",
                       "zh": "此登录链接无效。请用 /dashboard 获取新链接。"},
    "signin_used": {"en": "This sign-in link was already used. Ask for a new one with /dashboard.",
                    "zh": "此登录链接已被使用。请用 /dashboard 获取新链接。"},
    "signin_expired": {"en": "This sign-in link has expired. Ask for a new one with /dashboard.",
                       "zh": "此登录链接已过期。请用 /dashboard 获取新链接。"},
}


PARAM_HELP_ZH = {
    "temperature": "随机程度；0 = 总是选最可能的 token（贪心）",
    "top_p": "核采样：只保留累计概率达到此值的最可能 token",
    "top_k": "只保留最可能的 k 个 token；0 = 关闭",
    "min_p": "去掉概率低于 最高概率 × min_p 的 token",
    "presence_penalty": "本条回复中已用过的 token 减去此值",
    "frequency_penalty": "本条回复中每用一次 token 减去此值",
    "penalty_decay": "每生成一个 token，惩罚计数乘以此值",
    "mirostat_tau": "Mirostat 目标惊讶度（比特）；0 = 关闭",
    "mirostat_lr": "Mirostat 学习率",
    "mirostat_lr_decay": "Mirostat 学习率衰减",
    "max_tokens": "回复的最大 token 数",
}


def param_help(name: str, lang: str) -> str:
    from bot.engine.params import SPECS

    return PARAM_HELP_ZH[name] if lang == "zh" else SPECS[name].help


def normalize_lang(code: str | None, default: str = "en") -> str:
    """A platform language code (Telegram 'zh-hans', Discord 'zh-CN') to one of LANGS."""
    if not code:
        return default
    code = code.lower()
    return "zh" if code.startswith("zh") else "en" if code.startswith("en") else default


_PLURAL = re.compile(r"\{(\w+)\|([^{}|]*)\|([^{}|]*)\}")


def t(key: str, lang: str = "en", **args) -> str:
    entry = MESSAGES[key]
    text = _PLURAL.sub(lambda m: m[2] if args[m[1]] == 1 else m[3], entry.get(lang, entry["en"]))
    return text.format(**args)
