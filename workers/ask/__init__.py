"""Answers with cited moments: retrieve the best moments with the hybrid search, give the
caption model (Qwen3-VL) the question, the moments' captions and transcripts with their times
and one frame of each (the index's thumbnail), and decode its answer under a JSON schema whose
citations can only be the ids of the moments it was given."""
